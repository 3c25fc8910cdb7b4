"""checks.jax (issue 13, the JAX door): custom_vjp functions and plain JAX functions through the
same checker. Ground truth from JAX's own derivative of the plain forward (``jax.vjp`` of it,
and of its vjp for ``order=2``) or from a bug planted by construction, never from our checker."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from checks import GradientMismatchError, LayerContractError

pytestmark = pytest.mark.jax
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import checks.jax as cj  # noqa: E402
from property_tests import _jax_corpus as corpus  # noqa: E402

DTYPES = [np.float64, np.float32]


def _x64():
    """JAX's 64-bit mode for the oracle's own computations (the door sets it by itself)."""
    manager = getattr(jax, "enable_x64", None)
    if manager is None:  # older JAX
        from jax.experimental import enable_x64 as manager
    return manager(True)


def _vjp(fn, args, seed=0):
    """``jax.vjp`` of ``fn`` at ``args`` with a seeded cotangent, as float64 numpy arrays
    (compiled: one compilation instead of one per operation)."""
    with _x64():
        y = jax.eval_shape(fn, *args)
        ct = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
        grads = jax.jit(lambda *a: jax.vjp(fn, *a)[1](ct))(*args)
        return [None if g.dtype == jax.dtypes.float0 else np.asarray(g, np.float64)
                for g in grads]  # fmt: skip


def _float_names(fn, args):
    names = list(inspect.signature(fn).parameters)
    return [n for n, a in zip(names, args, strict=False) if np.asarray(a).dtype.kind == "f"]


@pytest.mark.parametrize("case", corpus.CORRECT + corpus.BUGGY, ids=lambda c: c.name)
def test_the_oracle_agrees_with_correct_backwards_and_not_with_buggy_ones(case):
    """The corpus is what it says: JAX's derivative of the plain forward equals the
    hand-written backward of a correct case, and differs from a buggy one's in its tensor."""
    args = case.args(np.float64)
    ours, plain = _vjp(case.fn, args), _vjp(case.plain, args)
    names = list(inspect.signature(case.plain).parameters)
    for name, a, b in zip(names, ours, plain, strict=True):
        if b is None:  # an integer argument (labels)
            continue
        scale = float(np.max(np.abs(b)))
        off = float(np.max(np.abs(a - b)))
        if case.bug is None:
            assert off <= 1e-12 * scale + 1e-14, (case.name, name, off, scale)
        elif name == case.tensor:
            assert off > 1e-3 * scale, (case.name, name, off, scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", corpus.CORRECT, ids=lambda c: c.name)
def test_a_correct_custom_vjp_passes_with_its_arguments_names(case, dtype):
    args = case.args(dtype)
    rep = cj.check_function(case.fn, *args)
    assert [t.name for t in rep.tensors] == _float_names(case.fn, args)
    assert all(t.dtype == np.dtype(dtype).name for t in rep.tensors)  # never cast
    assert all(t.n_checked == t.n_total for t in rep.tensors)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", corpus.BUGGY, ids=lambda c: c.name)
def test_a_buggy_custom_vjp_fails_and_the_report_names_the_tensor(case, dtype):
    with pytest.raises(GradientMismatchError) as ei:
        cj.check_function(case.fn, *case.args(dtype))
    failing = [t.name for t in ei.value.report.tensors if not t.ok]
    assert case.tensor in failing
    assert f"tensor {case.tensor}\n" in str(ei.value)
    assert case.says in str(ei.value)  # the hint, the element or the tied set
    assert "checks.jax.check_function(" in str(ei.value)  # the reproduction line


# --------------------------------------------------------------------------- order=2


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_order_2_passes_a_differentiable_backward_and_checks_dy_too(dtype):
    x = np.linspace(-1.5, 1.5, 12).reshape(3, 4).astype(dtype)
    rep = cj.check_function(corpus.TANH, x, order=2)
    assert [t.name for t in rep.tensors] == ["x", "dy"]
    assert all(t.dtype == np.dtype(dtype).name for t in rep.tensors)
    assert rep.layer_name == "backward of tanh"


def _second(fn, x, dy):
    """JAX's own vjp of the vjp of ``fn`` (the oracle of order=2)."""
    with _x64():
        g = lambda x, dy: jax.vjp(fn, x)[1](dy)[0]  # noqa: E731
        _, pull = jax.vjp(g, x, dy)
        return [np.asarray(v) for v in pull(jnp.ones_like(x))]


def test_order_2_catches_a_backward_that_stops_the_gradient_of_what_it_needs():
    x = np.linspace(-1.5, 1.5, 12).reshape(3, 4)
    dy = np.random.default_rng(0).standard_normal(x.shape)
    assert np.allclose(_second(corpus.TANH, x, dy)[0], _second(jnp.tanh, x, dy)[0])
    assert not np.allclose(_second(corpus.TANH_STOP_GRADIENT, x, dy)[0],
                           _second(jnp.tanh, x, dy)[0])  # fmt: skip
    cj.check_function(corpus.TANH_STOP_GRADIENT, x)  # order 1: its values are right
    with pytest.raises(GradientMismatchError) as ei:
        cj.check_function(corpus.TANH_STOP_GRADIENT, x, order=2)
    assert [t.name for t in ei.value.report.tensors if not t.ok] == ["x"]
    assert "backward of tanh, tensor x" in str(ei.value)
    assert "stop_gradient" in str(ei.value)


@pytest.mark.parametrize(
    ("fn", "says"),
    [(corpus.TANH_CALLBACK, "pure_callback"), (corpus.TANH_NUMPY, "numpy")],
    ids=["pure_callback", "numpy"],
)
def test_order_2_says_a_backward_jax_cannot_differentiate_is_not_differentiable(fn, says):
    x = np.linspace(-1.5, 1.5, 12).reshape(3, 4)
    with _x64(), pytest.raises((ValueError, TypeError)):  # the oracle: JAX itself cannot
        jax.vjp(lambda x, dy: jax.vjp(fn, x)[1](dy)[0], x, x)
    cj.check_function(fn, x)  # order 1 passes
    with pytest.raises(LayerContractError, match="backward of tanh is not differentiable") as ei:
        cj.check_function(fn, x, order=2)
    assert says in str(ei.value)


def test_order_2_passes_a_backward_that_is_nonlinear_in_its_inputs():
    (case,) = [c for c in corpus.CORRECT if c.name == "layer_norm"]
    rep = cj.check_function(case.fn, *case.args(np.float64), order=2)
    assert [t.name for t in rep.tensors] == ["x", "gamma", "beta", "dy"]


# --------------------------------------------------------------------------- arguments


def _affine(params, x, k):
    return jnp.tanh(x @ params["w"] + params["b"]) * k


def _affine_args():
    r = np.random.default_rng(0)
    return {"w": r.standard_normal((4, 3)), "b": r.standard_normal(3)}, r.standard_normal((5, 4))


def test_pytree_leaves_are_named_by_their_path_and_argnums_selects_arguments():
    params, x = _affine_args()
    rep = cj.check_function(_affine, params, x, 2)
    assert [t.name for t in rep.tensors] == ["params['b']", "params['w']", "x"]
    # x carries the batch though it comes second: its copies are stacked along axis 0
    assert rep.batching.startswith("x: packed along batch_axis=0")
    rep = cj.check_function(_affine, params, x, 2, argnums=0)
    assert [t.name for t in rep.tensors] == ["params['b']", "params['w']"]
    rep = cj.check_function(_affine, params, x, 2, argnums=(1,))
    assert [t.name for t in rep.tensors] == ["x"]


def test_bad_arguments_are_named():
    params, x = _affine_args()
    with pytest.raises(ValueError, match=r"argument 2 \(k\)"):
        cj.check_function(_affine, params, x, 2, argnums=2)
    with pytest.raises(ValueError, match="out of range"):
        cj.check_function(_affine, params, x, 2, argnums=3)
    with pytest.raises(ValueError, match="floating-point array"):
        cj.check_function(jnp.sin, np.arange(3))
    with pytest.raises(ValueError, match="order must be 1 or 2, got 3"):
        cj.check_function(jnp.sin, np.ones(3), order=3)
    with pytest.raises(TypeError, match=r"x has dtype bfloat16"):
        cj.check_function(jnp.sin, jnp.ones(3, jnp.bfloat16))


def test_a_function_that_raises_is_a_contract_error_naming_it():
    def broken(x):
        raise ValueError(f"no good: {x.shape}")

    with pytest.raises(LayerContractError, match=r"broken on its arguments raised ValueError"):
        cj.check_function(broken, np.ones(3))


def test_an_integer_output_is_skipped_and_the_report_says_so():
    def f(x):
        return jnp.tanh(x), jnp.argmax(x, axis=1)

    rep = cj.check_function(f, np.random.default_rng(0).standard_normal((3, 4)))
    assert any("output 1 of f" in n and "not checked" in n for n in rep.notes)
    assert "note: output 1 of f" in str(rep)
    with pytest.raises(ValueError, match="no floating-point output"):
        cj.check_function(lambda x: jnp.argmax(x), np.ones(3))


def test_every_output_is_checked_with_its_own_cotangent():
    """A bwd that ignores the second output's cotangent: wrong by construction (the second
    output, 2 x, moves with x)."""

    @jax.custom_vjp
    def two(x):
        return jnp.tanh(x), 2 * x

    two.defvjp(lambda x: (two(x), x), lambda x, g: (g[0] * (1 - jnp.tanh(x) ** 2),))
    x = np.linspace(-1, 1, 6)
    with pytest.raises(GradientMismatchError, match="tensor x"):
        cj.check_function(two, x)
    # with the second output's cotangent zero (a dy= over both outputs), the bwd is right
    dy = np.concatenate([np.random.default_rng(1).standard_normal(6), np.zeros(6)])
    assert cj.check_function(two, x, dy=dy).ok


def test_float64_is_evaluated_in_float64_and_the_global_setting_is_left_alone():
    if jax.config.jax_enable_x64:
        pytest.skip("jax_enable_x64 is on in this process")
    seen = set()

    def f(x):
        seen.add(str(x.dtype))  # what JAX computes in (traced or concrete)
        return jnp.tanh(x)

    x = np.linspace(-1, 1, 6)
    rep = cj.check_function(f, x)
    assert rep.ok and rep.tensors[0].dtype == "float64"
    assert seen == {"float64", "complex128"}  # real calls and the complex step's
    assert not jax.config.jax_enable_x64
    assert jnp.asarray(x).dtype == jnp.float32


def test_float32_is_checked_as_float32_and_differenced_in_float64_when_it_follows():
    rep = cj.check_function(jnp.tanh, np.linspace(-1, 1, 6, dtype=np.float32))
    assert rep.tensors[0].dtype == "float32" and rep.precision.startswith("float64")
    rep = cj.check_function(jnp.tanh, np.linspace(-1, 1, 6, dtype=np.float32), precision="native")
    assert rep.tensors[0].dtype == "float32" and rep.precision.startswith("native float32")


def test_the_complex_step_is_used_where_jax_carries_it_and_refused_cleanly_elsewhere():
    x = np.linspace(-1, 1, 6)
    assert cj.check_function(jnp.tanh, x).method == "complex"
    # erf refuses complex operands (TypeError): real differences instead, and it passes
    rep = cj.check_function(jax.scipy.special.erf, x)
    assert rep.method == "richardson" and rep.ok

    # a forward through a numpy callback declared real: refused as well
    def cb(x):
        return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.real.dtype), x)

    cb_rule = jax.custom_jvp(cb)
    cb_rule.defjvp(lambda p, t: (cb(p[0]), jnp.cos(p[0]) * t[0]))
    rep = cj.check_function(cb_rule, x)
    assert rep.method == "richardson" and rep.ok


@jax.custom_vjp
def _numpy_sin(x):
    return jnp.asarray(np.sin(np.asarray(x)))  # numpy in the forward: jax.jit cannot trace it


_numpy_sin.defvjp(lambda x: (_numpy_sin(x), x), lambda x, g: (g * jnp.cos(x),))


def test_a_function_that_cannot_be_compiled_is_evaluated_op_by_op_and_says_so():
    def f(x):  # every output moves with every x: one call per element (over 32)
        return _numpy_sin(x) * jnp.sum(x)

    x = np.linspace(0.1, 1, 40)
    with pytest.raises(Exception, match="Tracer"):  # JAX itself cannot compile it
        jax.jit(f)(x)
    rep = cj.check_function(f, x, coverage="full")
    assert rep.n_evals > 32
    assert any("op by op" in n and "jit" in n for n in rep.notes)
    assert not cj.check_function(f, x, jit=False).notes


def test_the_caller_arrays_are_untouched():
    params, x = _affine_args()
    before = ({k: v.copy() for k, v in params.items()}, x.copy())
    xj = jnp.asarray(x, dtype=jnp.float32)
    cj.check_function(_affine, params, x, 2)
    cj.check_function(_affine, params, xj, 2)
    for k in params:
        assert np.array_equal(params[k], before[0][k]) and params[k].flags.writeable
    assert np.array_equal(x, before[1])
    assert np.array_equal(np.asarray(xj), x.astype(np.float32))


def test_without_a_way_to_enable_x64_float32_stays_native_and_float64_is_refused(monkeypatch):
    from checks.doors import jax_eval

    if jax.config.jax_enable_x64:
        pytest.skip("jax_enable_x64 is on in this process")
    monkeypatch.setattr(jax_eval, "_x64_manager", lambda: None)
    x = np.linspace(-1, 1, 6)
    rep = cj.check_function(jnp.tanh, x.astype(np.float32))
    assert rep.ok and rep.precision.startswith("native float32")
    assert "TypeError" in rep.precision  # the probe's float64 call was refused
    with pytest.raises(TypeError, match="x is float64, but jax_enable_x64 is off"):
        cj.check_function(jnp.tanh, x)


def test_order_2_differentiates_the_backward_at_the_given_dy():
    x = np.linspace(-1.5, 1.5, 12).reshape(3, 4)
    dy = np.random.default_rng(5).standard_normal(x.shape)
    assert cj.check_function(corpus.TANH, x, order=2, dy=dy).ok
    with pytest.raises(ValueError, match="dy must be an ndarray with 12 elements"):
        cj.check_function(corpus.TANH, x, order=2, dy=np.ones(5))
