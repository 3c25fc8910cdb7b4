"""Subsampling, functional core: eq. (3), (10)/(11), (19), (20).

Oracles: central differences (``_fd``, independent of ``checks``), the adjoint identity
``<down(A), D> == <A, up(D)>``, an ``np.kron`` up-sampling written from the derivation's text, and
PyTorch autograd (``avg_pool2d`` / ``max_pool2d``) when torch is installed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from checks.strategies import subsample_configs, tie_free_arrays, well_conditioned_arrays
from cnn_ref.functional.subsample import subsample_backward, subsample_forward
from property_tests._fd import assert_vjp_close, numerical_vjp


class Case(NamedTuple):
    x: np.ndarray
    beta: np.ndarray
    b: np.ndarray
    size: tuple[int, int]
    stride: tuple[int, int] | None
    kind: str

    @property
    def opts(self) -> dict:
        return {"size": self.size, "stride": self.stride, "kind": self.kind}


@st.composite
def cases(draw: st.DrawFn, kinds: tuple[str, ...] = ("sum", "mean", "max")) -> Case:
    cfg = draw(subsample_configs(kinds=kinds, max_elements=200), label="geometry")
    # None (= size, the derivation's case), or any stride: overlapping, gapped, not dividing the map
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)), label="stride")
    arrays = tie_free_arrays if cfg.kind == "max" else well_conditioned_arrays
    x = draw(arrays(cfg.x_shape), label="x")
    beta = draw(well_conditioned_arrays(cfg.param_shape, low=0.3, high=2.5), label="beta")
    b = draw(well_conditioned_arrays(cfg.param_shape), label="b")
    return Case(x, beta, b, cfg.size, stride, cfg.kind)


def _dy(case: Case, seed: int = 0) -> np.ndarray:
    shape = subsample_forward(case.x, case.beta, case.b, **case.opts).shape
    return np.random.default_rng(seed).normal(size=shape)


# the derivation's configuration: 2x2 blocks on a 5x7 map (cropped border), beta != 1
_SEED_CASE = Case(
    np.random.default_rng(1).permutation(2 * 3 * 5 * 7).reshape(2, 3, 5, 7) * 0.1,
    np.array([0.5, -1.5, 2.0]),
    np.array([0.1, -0.2, 0.3]),
    (2, 2),
    None,
    "mean",
)


@given(case=cases())
@example(case=_SEED_CASE)
@example(case=_SEED_CASE._replace(kind="max", stride=(1, 3)))
def test_literal_and_fast_agree_forward_and_backward(case: Case) -> None:
    u_lit = subsample_forward(case.x, case.beta, case.b, **case.opts, impl="literal")
    u_fast = subsample_forward(case.x, case.beta, case.b, **case.opts, impl="fast")
    np.testing.assert_allclose(u_fast, u_lit, rtol=1e-12, atol=1e-12)
    dy = _dy(case)
    lit = subsample_backward(dy, case.x, case.beta, **case.opts, impl="literal")
    fast = subsample_backward(dy, case.x, case.beta, **case.opts, impl="fast")
    for name, a, c in zip(("dx", "dbeta", "db"), fast, lit, strict=True):
        assert a.shape == c.shape, name
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("impl", ["literal", "fast"])
@given(case=cases())
@example(case=_SEED_CASE)
def test_gradients_match_central_differences_eq10_19_20(case: Case, impl: str) -> None:
    x, beta, b = case.x.copy(), case.beta.copy(), case.b.copy()
    dy = _dy(case)
    dx, dbeta, db = subsample_backward(dy, x, beta, **case.opts, impl=impl)

    def f() -> np.ndarray:
        return subsample_forward(x, beta, b, **case.opts, impl=impl)

    assert_vjp_close(dx, numerical_vjp(f, x, dy))  # eq. (10)/(11)
    assert_vjp_close(dbeta, numerical_vjp(f, beta, dy))  # eq. (20)
    assert_vjp_close(db, numerical_vjp(f, b, dy))  # eq. (19)


@pytest.mark.parametrize("impl", ["literal", "fast"])
@given(case=cases())
def test_up_is_the_adjoint_of_down(case: Case, impl: str) -> None:
    # <down(A), D> == <A, up(D)>, exactly (down is linear, or piecewise linear for max)
    one, zero = np.ones_like(case.beta), np.zeros_like(case.b)
    d = subsample_forward(case.x, one, zero, **case.opts, impl=impl)
    D = _dy(case, seed=3)
    up_D, _, _ = subsample_backward(D, case.x, one, **case.opts, impl=impl)
    np.testing.assert_allclose(np.vdot(d, D), np.vdot(case.x, up_D), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["sum", "mean"])
@given(data=st.data())
def test_subsample_delta_is_beta_times_upsampled_delta_eq10(kind: str, data: st.DataObject) -> None:
    # The derivation's up(delta) is kron(delta, ones(n)); with the 1/n^2 factor for mean pooling,
    # and zeros on the cropped border, beta * up(delta) is dJ/dA of the layer below.
    cfg = data.draw(subsample_configs(kinds=(kind,), max_elements=200), label="geometry")
    x = data.draw(well_conditioned_arrays(cfg.x_shape), label="x")
    beta = data.draw(well_conditioned_arrays(cfg.param_shape, low=0.3, high=2.5), label="beta")
    dy = data.draw(well_conditioned_arrays(cfg.out_shape), label="delta")
    dx, _, _ = subsample_backward(dy, x, beta, size=cfg.size, kind=kind)
    sh, sw = cfg.size
    expected = np.zeros_like(x)
    area = 1.0 if kind == "sum" else sh * sw
    for n in range(cfg.n):
        for i in range(cfg.c):
            up = np.kron(dy[n, i], np.ones((sh, sw))) / area
            expected[n, i, : up.shape[0], : up.shape[1]] = beta[i] * up
    np.testing.assert_allclose(dx, expected, rtol=1e-13, atol=1e-13)


@given(case=cases(kinds=("max",)))
def test_max_routes_delta_to_the_window_maximum(case: Case) -> None:
    dy = _dy(case)
    dx, _, _ = subsample_backward(dy, case.x, case.beta, **case.opts)
    # non-zero dx only where x is the maximum of some window
    u = subsample_forward(case.x, np.ones_like(case.beta), np.zeros_like(case.b), **case.opts)
    for n, i in np.ndindex(*case.x.shape[:2]):
        hit = np.isin(case.x[n, i], u[n, i])
        assert np.all(dx[n, i][~hit] == 0)


def test_max_ties_route_to_the_first_maximum_in_row_major_order() -> None:
    x = np.zeros((1, 1, 2, 2))
    for impl in ("literal", "fast"):
        dx, _, _ = subsample_backward(
            np.ones((1, 1, 1, 1)), x, np.ones(1), size=2, kind="max", impl=impl
        )
        np.testing.assert_array_equal(dx[0, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_dbeta_uses_down_of_the_input_not_an_upsampled_delta_eq20() -> None:
    # eq. (20): dJ/dbeta_i = sum_st (delta_i * d_i), d_i = down(A_i); a 2x2 sum by hand
    x = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    delta = np.array([[[[1.0, -1.0], [2.0, 0.5]]]])
    d = np.array([[1 + 2 + 5 + 6, 3 + 4 + 7 + 8], [9 + 10 + 13 + 14, 11 + 12 + 15 + 16]])
    for impl in ("literal", "fast"):
        _, dbeta, db = subsample_backward(delta, x, np.array([3.0]), size=2, impl=impl)
        np.testing.assert_allclose(dbeta, [np.sum(delta[0, 0] * d)], rtol=1e-15)
        np.testing.assert_allclose(db, [2.5], rtol=1e-15)  # eq. (19)


def test_complex_step_propagates_through_every_kind() -> None:
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 2 * 5 * 6).reshape(2, 2, 5, 6) * 0.1
    beta, b = np.array([0.7, -1.3]), np.array([0.2, 0.1])
    dy = rng.normal(size=(2, 2, 2, 3))
    h = 1e-20
    for kind in ("sum", "mean", "max"):
        for impl in ("literal", "fast"):
            dx, dbeta, _ = subsample_backward(dy, x, beta, size=2, kind=kind, impl=impl)
            e = np.zeros_like(x)
            e[1, 0, 2, 3] = 1
            u = subsample_forward(x + 1j * h * e, beta, b, size=2, kind=kind, impl=impl)
            assert np.vdot(dy, u.imag / h) == pytest.approx(dx[1, 0, 2, 3], rel=1e-12, abs=1e-14)
            u = subsample_forward(x, beta + 1j * h * np.array([0, 1]), b, size=2, kind=kind)
            assert np.vdot(dy, u.imag / h) == pytest.approx(dbeta[1], rel=1e-12)


def test_float32_stays_float32() -> None:
    x = np.ones((1, 2, 4, 4), np.float32)
    p = np.ones(2, np.float32)
    assert subsample_forward(x, p, p, size=2).dtype == np.float32
    grads = subsample_backward(np.ones((1, 2, 2, 2), np.float32), x, p, size=2)
    assert all(g.dtype == np.float32 for g in grads)


# ---------------------------------------------------------------------------------------------
# PyTorch autograd as an independent oracle
# ---------------------------------------------------------------------------------------------


@pytest.mark.torch
@given(case=cases())
@example(case=_SEED_CASE)
def test_matches_torch_pooling_autograd(case: Case) -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    sh, sw = case.size
    stride = case.size if case.stride is None else case.stride
    x = torch.tensor(case.x, requires_grad=True)
    beta = torch.tensor(case.beta, requires_grad=True)
    b = torch.tensor(case.b, requires_grad=True)
    if case.kind == "max":
        pooled = F.max_pool2d(x, (sh, sw), stride)
    else:
        pooled = F.avg_pool2d(x, (sh, sw), stride) * (sh * sw if case.kind == "sum" else 1)
    u_t = beta[:, None, None] * pooled + b[:, None, None]
    dy = _dy(case)
    u_t.backward(torch.tensor(dy))
    u = subsample_forward(case.x, case.beta, case.b, **case.opts)
    dx, dbeta, db = subsample_backward(dy, case.x, case.beta, **case.opts)
    np.testing.assert_allclose(u, u_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    for name, ours, theirs in (("dx", dx, x), ("dbeta", dbeta, beta), ("db", db, b)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)


# ---------------------------------------------------------------------------------------------
# bad input: the error names the argument and the value
# ---------------------------------------------------------------------------------------------

_X = np.ones((2, 3, 4, 5))
_P = np.ones(3)


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"x": np.ones((3, 4, 5))}, ValueError, ["x", "4 dimensions", "(3, 4, 5)"]),
        ({"x": np.ones((2, 3, 4, 5), int)}, TypeError, ["x", "int64"]),
        ({"x": [[[[1.0]]]]}, TypeError, ["x", "list"]),
        ({"beta": np.ones(2)}, ValueError, ["beta", "(2,)", "(3,)"]),
        ({"beta": np.ones((3, 1))}, ValueError, ["beta", "1 dimensions", "(3, 1)"]),
        ({"b": np.ones(4)}, ValueError, ["b", "(4,)", "(3,)"]),
        ({"size": 0}, ValueError, ["size", "0"]),
        ({"size": (2, -1)}, ValueError, ["size", "(2, -1)"]),
        ({"size": 2.0}, TypeError, ["size", "2.0"]),
        ({"size": 5}, ValueError, ["size", "(5, 5)", "(4, 5)"]),
        ({"size": (1, 6)}, ValueError, ["size", "(1, 6)", "(4, 5)"]),
        ({"stride": 0}, ValueError, ["stride", "0"]),
        ({"kind": "median"}, ValueError, ["kind", "'median'", "'sum'", "'mean'", "'max'"]),
        ({"impl": "slow"}, ValueError, ["impl", "'slow'", "'literal'", "'fast'"]),
        ({"x": np.full((2, 3, 4, 5), np.nan)}, ValueError, ["x", "non-finite"]),
        ({"beta": np.array([1.0, np.inf, 1.0])}, ValueError, ["beta", "non-finite", "(1,)"]),
    ],
)
def test_forward_rejects_bad_input_naming_it(kwargs: dict, exc: type, words: list[str]) -> None:
    args = {"x": _X, "beta": _P, "b": _P, "size": 2, "stride": None, "kind": "sum"}
    args |= kwargs
    impl = args.pop("impl", "fast")
    x, beta, b = args.pop("x"), args.pop("beta"), args.pop("b")
    with pytest.raises(exc) as info:
        subsample_forward(x, beta, b, impl=impl, **args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    ("dy", "words"),
    [
        (np.ones((2, 3, 2, 3)), ["dy", "(2, 3, 2, 3)", "(2, 3, 2, 2)"]),
        (np.ones((2, 3, 4)), ["dy", "4 dimensions", "(2, 3, 4)"]),
        (np.full((2, 3, 2, 2), np.inf), ["dy", "non-finite"]),
    ],
)
def test_backward_rejects_bad_dy_naming_it(dy: np.ndarray, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        subsample_backward(dy, _X, _P, size=2)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
