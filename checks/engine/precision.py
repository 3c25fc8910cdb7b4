"""Whether a float32 (or float16) layer's finite differences can be taken in float64.

:func:`probe` runs the checks behind ``precision="auto"`` (see :func:`checks.check_layer`);
the runner then evaluates the numerical side on float64 copies of ``x`` and the parameters
and judges it with :func:`checks.engine.tolerances.promoted`. A refused probe leaves everything in
the caller's dtypes (differences in float32, as ``precision="native"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from checks.engine import contract, tolerances
from checks.report.errors import GradcheckError

__all__ = ["Target", "probe"]

# the probe: a perturbation of _PROMOTE_STEP must give the same outputs
# in float64 as in the layer's dtype; float64 difference quotients at _PROMOTE_MID and
# _PROMOTE_TINY must agree to _PROMOTE_AGREE
_PROMOTE_STEP = 1e-2
_PROMOTE_MID = 1e-6
_PROMOTE_TINY = 1e-9
_PROMOTE_AGREE = 1e-2
_PROMOTE_ULPS = 256.0


class Target(Protocol):
    """What the probe needs of the runner's target (``checks.engine.runner._Target``)."""

    names: list[str]

    def value(self, name: str) -> np.ndarray: ...

    def eval_replace(self, name: str, arr: np.ndarray, what: str) -> np.ndarray: ...

    def working_forward(self, what: str) -> np.ndarray: ...

    def promote(self) -> None: ...

    def demote(self) -> list[str]: ...


class _NoPromotion(Exception):
    pass


def probe(
    target: Target, y: np.ndarray, rng: np.random.Generator, rule: tolerances.DtypeRule
) -> tuple[np.ndarray | None, str]:
    """Probe whether forward computes the same function on float64 copies of every tensor.

    Returns the float64 output at ``t`` (the target left promoted) or ``None`` and why not
    (the target back in the caller's dtypes). The probes: forward on float64 copies returns
    float64 outputs equal to the native ones within the native rounding; for each tensor, a
    perturbation of ``_PROMOTE_STEP`` (relative, per element) gives the same outputs in both
    precisions (a layer reading a cached or cast copy of a parameter would not); and the
    float64 difference quotients along one direction at steps ``_PROMOTE_MID`` (a few float32
    ulps) and ``_PROMOTE_TINY`` (below one, far above float64's) agree output by output to
    ``_PROMOTE_AGREE`` (a part of forward computed in float32 moves in float32 ulps: its
    share of the quotient is missing at the tiny step and coarse at the mid one). A ReLU
    kink within the mid step of ``t`` also fails the last probe; the check then stays
    native, which is safe.

    Forward raising on a float64 copy with one of :data:`checks.engine.contract.REFUSALS` (a dtype
    guard) also keeps the check native; anything else it raises, and anything at all on
    the perturbed copies in the layer's own dtype, propagates as a
    :class:`~checks.report.errors.LayerContractError` (the target back in the caller's dtypes).
    """
    # y in its own dtype (a float64 copy of it would be held through every probe call)
    ybar = float(np.mean(np.abs(y), dtype=np.float64)) if y.size else 0.0

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        if a.shape != b.shape:
            return False
        af, bf = a.reshape(-1), b.reshape(-1)
        return _all_slices(
            lambda i: (
                np.abs(af[i] - bf[i].astype(np.float64))
                <= _PROMOTE_ULPS * rule.eps * (np.abs(bf[i].astype(np.float64)) + ybar)
            ),
            af.size,
        )

    what = "in the precision probe"
    # per tensor: the generator's state before its direction was drawn (the direction is drawn
    # again when needed, rather than held) and forward's output on the perturbed copy
    probes = []
    # real values in the layer's own dtype: whatever forward raises on them is the layer
    # failing (a LayerContractError, as on any call), not a reason to stay native
    for name in target.names:
        t = target.value(name)
        if t.dtype == np.float64 or t.size == 0:
            continue
        state = rng.bit_generator.state
        big = _perturbed(t, _step(t, rng))
        probes.append((name, t.dtype, state, target.eval_replace(name, big, what)))
        del big
    target.promote()
    try:
        y_p = target.working_forward(what)
        if y_p.dtype != np.float64:
            raise _NoPromotion(f"forward on float64 copies returned {y_p.dtype}")
        if not same(y_p, y):
            raise _NoPromotion("forward on float64 copies gave other outputs")
        while probes:  # each native output dropped once compared
            name, dtype, state, native = probes.pop(0)
            t64 = target.value(name)
            big = _perturbed(t64, _step(t64, _redrawn(rng, state)), dtype).astype(np.float64)
            if not same(target.eval_replace(name, big, what), native):
                raise _NoPromotion(
                    f"forward did not follow a float64 {name} put in its place: it reads "
                    f"another array (its own attribute, or a copy it cached; behind "
                    f"LayerAdapter, set_params= hands the copy to the layer)"
                )
            del big, native

            def step(t64: np.ndarray = t64, state: Mapping[str, Any] = state) -> np.ndarray:
                return _step(t64, _redrawn(rng, state))

            if not _quotients_agree(target, name, t64, step, y_p, ybar, what):
                raise _NoPromotion(f"forward computes part of {name}'s effect in its own dtype")
    except (_NoPromotion, GradcheckError) as exc:
        target.demote()
        if isinstance(exc, _NoPromotion):
            return None, str(exc)
        # a layer may refuse float64 (a dtype guard): it stays native; anything else it
        # raises is the layer failing
        if not contract.refused(exc):
            raise
        return None, f"forward failed on float64 copies: {type(exc.__cause__).__name__}"
    return y_p, "forward follows float64 copies of every tensor (probed)"


# outputs compared at once (float64 temporaries of this many elements)
_SLICE = 1 << 16


def _all_slices(ok: Callable[[slice], np.ndarray], n: int) -> bool:
    """Whether ``ok(i)`` (flat arrays indexed by ``i``) holds on every slice of ``n``."""
    return all(bool(np.all(ok(slice(i, i + _SLICE)))) for i in range(0, n, _SLICE))


def _step(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random step per element, relative to ``max(|t|, 1)``, at most 1 of it."""
    v = rng.standard_normal(t.shape)
    v /= float(np.max(np.abs(v))) or 1.0
    return np.maximum(np.abs(t.astype(np.float64)), 1.0) * v


def _redrawn(rng: np.random.Generator, state: Mapping[str, Any]) -> np.random.Generator:
    """A generator at ``state`` of ``rng``'s kind (``rng`` itself is left as it is)."""
    again = np.random.Generator(type(rng.bit_generator)())
    again.bit_generator.state = state
    return again


def _perturbed(t: np.ndarray, step: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``t`` moved by ``_PROMOTE_STEP`` of ``step``, in ``dtype`` (``t``'s by default)."""
    out = np.multiply(step, _PROMOTE_STEP)
    out += t
    return out.astype(t.dtype if dtype is None else dtype)


def _quotients_agree(
    target: Target,
    name: str,
    t64: np.ndarray,
    step: Callable[[], np.ndarray],
    y_p: np.ndarray,
    ybar: float,
    what: str,
) -> bool:
    """Whether the float64 difference quotients along ``step`` at ``_PROMOTE_MID`` and
    ``_PROMOTE_TINY`` agree output by output (see :func:`probe`); ``step()`` draws the step
    (again for each quotient, rather than held beside the outputs)."""
    q = []
    for tau in (_PROMOTE_MID, _PROMOTE_TINY):
        moved = step()
        moved *= tau
        moved += t64
        y = target.eval_replace(name, moved, what).astype(np.float64, copy=False)
        del moved
        y -= y_p
        y /= tau
        q.append(y.reshape(-1))
    q0, q1 = q
    qbar = float(np.mean(np.abs(q0)))
    eps64 = tolerances.DTYPE_TABLE[np.dtype(np.float64)].eps
    yp = y_p.reshape(-1)
    return _all_slices(
        lambda i: (
            np.abs(q0[i] - q1[i])
            <= _PROMOTE_AGREE * (np.abs(q0[i]) + qbar)
            + 64 * eps64 * (np.abs(yp[i]) + ybar) / _PROMOTE_TINY
        ),
        q0.size,
    )
