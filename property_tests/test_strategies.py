"""checks.strategies: every drawn configuration is valid, small, and reaches the shapes that
hide bugs; array strategies keep their promises; the property-test builder catches a bug."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import cnn_ref
from checks.strategies import (
    ConvConfig,
    conv_configs,
    dense_configs,
    gradcheck_property,
    subsample_configs,
    tie_free_arrays,
    well_conditioned_arrays,
)
from cnn_ref.functional.conv import conv2d_forward
from cnn_ref.functional.dense import dense_forward
from cnn_ref.functional.subsample import subsample_forward


@given(cfg=conv_configs())
def test_conv_config_out_shape_is_what_the_reference_conv_produces(cfg: ConvConfig) -> None:
    x = np.ones(cfg.x_shape)
    K = np.ones(cfg.K_shape)
    u = conv2d_forward(
        x, K, np.zeros(cfg.b_shape), stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation
    )
    assert u.shape == cfg.out_shape
    assert min(cfg.out_shape) >= 1
    assert np.prod(cfg.x_shape) <= 400
    assert np.prod(cfg.K_shape) <= 400


@given(cfg=conv_configs(max_stride=1, max_padding=0, max_dilation=1, max_side=5))
def test_conv_config_bounds_are_respected(cfg: ConvConfig) -> None:
    assert cfg.stride == (1, 1) and cfg.padding == (0, 0) and cfg.dilation == (1, 1)
    assert max(cfg.h, cfg.w) <= 5


@given(cfg=subsample_configs(overlapping=True))
def test_subsample_config_out_shape_matches_reference(cfg) -> None:
    x = np.ones(cfg.x_shape)
    u = subsample_forward(
        x,
        np.ones(cfg.param_shape),
        np.zeros(cfg.param_shape),
        size=cfg.size,
        stride=cfg.stride,
        kind=cfg.kind,
    )
    assert u.shape == cfg.out_shape
    assert cfg.kind in ("sum", "mean", "max")


@given(cfg=dense_configs())
def test_dense_config_shapes(cfg) -> None:
    y = dense_forward(np.ones(cfg.x_shape), np.ones(cfg.W_shape), np.zeros(cfg.b_shape))
    assert y.shape == cfg.out_shape


_FIND = settings(max_examples=2000, database=None, phases=[Phase.generate])


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param(lambda c: c.h != c.w, id="non-square maps"),
        pytest.param(lambda c: c.c_in != c.c_out, id="c_in != c_out"),
        pytest.param(lambda c: c.kh != c.kw, id="non-square kernel"),
        pytest.param(
            lambda c: c.stride[0] > 1 and (c.h + 2 * c.padding[0]) % c.stride[0] != 0,
            id="stride not dividing the size",
        ),
        pytest.param(lambda c: c.padding != (0, 0) and c.dilation != (1, 1), id="pad+dilation"),
    ],
)
def test_conv_configs_reach_shapes_that_hide_bugs(claim) -> None:
    assert claim(find(conv_configs(), claim, settings=_FIND))


def test_subsample_configs_reach_non_divisible_sizes() -> None:
    cfg = find(
        subsample_configs(),
        lambda c: c.size[0] > 1 and c.h % c.size[0] != 0,
        settings=_FIND,
    )
    assert cfg.h % cfg.size[0] != 0


@given(a=well_conditioned_arrays((3, 4, 5), low=0.25, high=3.0))
def test_well_conditioned_arrays_stay_in_their_magnitude_band(a) -> None:
    assert a.shape == (3, 4, 5) and a.dtype == np.float64
    assert np.all(np.abs(a) >= 0.25) and np.all(np.abs(a) <= 3.0)
    assert len(np.unique(a)) > 1


@given(a=well_conditioned_arrays(7, np.float32))
def test_well_conditioned_arrays_float32(a) -> None:
    assert a.shape == (7,) and a.dtype == np.float32


@given(a=tie_free_arrays((2, 3, 4, 4), spacing=0.1))
def test_tie_free_arrays_have_no_ties(a) -> None:
    gaps = np.diff(np.sort(a.ravel()))
    assert gaps.min() >= 0.1 * (1 - 1e-12)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: conv_configs(max_stride=0), "max_stride"),
        (lambda: conv_configs(max_padding=-1), "max_padding"),
        (lambda: subsample_configs(kinds=("median",)), "kinds"),
        (lambda: dense_configs(max_features=0), "max_features"),
        (lambda: well_conditioned_arrays((2,), low=0.0), "low"),
        (lambda: well_conditioned_arrays((2,), np.int64), "dtype"),
        (lambda: tie_free_arrays((2,), spacing=0), "spacing"),
    ],
)
def test_bad_arguments_name_themselves(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- gradcheck_property: a correct layer passes, a broken one is caught ------------------
def _conv(c: ConvConfig) -> cnn_ref.Conv2D:
    return cnn_ref.Conv2D(
        c.c_in, c.c_out, c.kernel_size, stride=c.stride, padding=c.padding, dilation=c.dilation
    )


_SMALL = dict(max_batch=2, max_channels=2, max_side=5, max_kernel=3, max_elements=60)

test_reference_conv_passes_the_built_property = settings(max_examples=8)(
    gradcheck_property(conv_configs(**_SMALL), _conv)
)


class _KernelNotFlipped(cnn_ref.Conv2D):
    """Conv2D whose kernel gradient forgot the outer rot180 of eq. (14)."""

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = super().backward(dy)
        self.grads["K"] = self.grads["K"][..., ::-1, ::-1].copy()
        return dx


def test_built_property_catches_a_missing_rot180() -> None:
    from checks.report.errors import GradientMismatchError

    def broken(c: ConvConfig) -> _KernelNotFlipped:
        return _KernelNotFlipped(c.c_in, c.c_out, (c.kh, c.kw))

    prop = settings(
        max_examples=10,
        phases=[Phase.generate],
        database=None,
        suppress_health_check=list(HealthCheck),
    )(gradcheck_property(st.just(ConvConfig(1, 2, 2, 4, 5, 2, 3, (1, 1), (0, 0), (1, 1))), broken))
    with pytest.raises(GradientMismatchError, match="rot180"):
        prop()
