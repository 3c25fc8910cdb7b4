"""The checker checked on layers whose bugs are known by construction (checks.audit.corpus).

Every mutant must be caught with its expected exception class (and its catalogued hint, where
the mistake has one); every correct-but-awkward layer must pass; a single planted error of a
relative 1e-6 (smooth float64 layer) or 1e-4 (kink-bearing layer) must be caught on any drawn
geometry, while the same layer without the error passes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks import GradientMismatchError
from checks.audit.corpus import correct_cases, mutant_cases
from checks.audit.mutants import Mutant, one_element, set_grad
from checks.audit.selftest import SENSITIVITY_SETUPS, detection_threshold, run_case
from checks.strategies import conv_configs

MUTANTS = mutant_cases()
CORRECT = correct_cases()


def test_corpus_is_large_enough():
    assert len(MUTANTS) >= 25
    assert len({c.name for c in [*MUTANTS, *CORRECT]}) == len(MUTANTS) + len(CORRECT)


@pytest.mark.parametrize("case", MUTANTS, ids=lambda c: c.name)
def test_every_mutant_is_caught_with_the_expected_exception_and_hint(case):
    result = run_case(case)
    assert result.outcome == case.expected.__name__ or result.ok, (
        f"{case.name} ({case.mistake}): expected {case.expected.__name__}, got {result.outcome}"
    )
    assert result.ok, f"{case.name}: expected a hint containing {case.hint!r}, got {result.hints}"


@pytest.mark.parametrize("case", CORRECT, ids=lambda c: c.name)
def test_every_correct_layer_passes(case):
    result = run_case(case)
    assert result.ok, f"false alarm on {case.name} ({case.mistake}): {result.outcome}"


@pytest.mark.parametrize("setup", SENSITIVITY_SETUPS, ids=[s.label for s in SENSITIVITY_SETUPS])
def test_detection_threshold_meets_the_targets(setup):
    # issue 3's targets: 1e-6 on a smooth float64 layer, 1e-4 where central differences and
    # kinks are involved, 1e-2 in float32; a threshold at ~1e-15 would mean the checker flags
    # rounding noise
    threshold = detection_threshold(setup, steps=6)
    assert threshold is not None and 1e-15 < threshold <= setup.target, (setup.label, threshold)


@given(
    cfg=conv_configs(max_stride=2, max_padding=1, max_dilation=1, max_elements=150),
    convention=st.sampled_from(["conv", "xcorr"]),
    seed=st.integers(0, 2**16),
)
def test_a_one_element_1e6_error_is_caught_on_any_conv_geometry(cfg, convention, seed):
    from checks import check_layer
    from cnn_ref import Conv2D

    def make():
        layer = Conv2D(
            cfg.c_in,
            cfg.c_out,
            cfg.kernel_size,
            stride=cfg.stride,
            padding=cfg.padding,
            convention=convention,
            activation="tanh",
            seed=seed,
        )
        return layer, np.random.default_rng(seed).standard_normal(cfg.x_shape)

    layer, x = make()
    check_layer(layer, x, seed=seed)  # the correct layer passes: no false alarm
    base, x = make()
    mutant = Mutant(base, set_grad("K", one_element("K", 1e-6)), "dK 1e-6")
    with pytest.raises(GradientMismatchError):
        check_layer(mutant, x, seed=seed)
