"""Packing perturbations along the batch axis, and the probe that says when that is allowed.

Conv, pooling and dense layers treat the samples of a batch independently: ``y[n]`` depends on
``x[n]`` only, and on nothing else in the batch. Then many perturbed copies of ``x`` can be
stacked along ``batch_axis`` and evaluated in one forward call, and one position can be
perturbed in every sample at once (the change of ``y[n]`` belongs to ``x[n]``). A batch-norm
layer breaks both; :func:`probe_independence` detects that and the runner falls back to one
forward call per perturbation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from checks.engine import contract
from checks.report.errors import LayerContractError

__all__ = ["Copies", "pack_copies", "probe_independence", "unpack_outputs"]


# outputs compared at once (float64 temporaries of this many elements)
_SLICE = 1 << 16


def _close(a: np.ndarray, b: np.ndarray, eps: float) -> bool:
    """``|a - b| <= 256 eps (|a| + mean |a|)`` everywhere, both finite (in slices)."""
    if a.shape != b.shape:
        return False
    af, bf = a.reshape(-1), b.reshape(-1)
    total = 0.0
    for i in range(0, af.size, _SLICE):
        pa = af[i : i + _SLICE].astype(np.float64)
        if not (np.isfinite(pa).all() and np.isfinite(bf[i : i + _SLICE]).all()):
            return False
        total += float(np.abs(pa).sum())
    mean = total / af.size if af.size else 0.0  # an empty output: no warning
    for i in range(0, af.size, _SLICE):
        pa = af[i : i + _SLICE].astype(np.float64)
        pb = bf[i : i + _SLICE].astype(np.float64)
        scale = np.abs(pa) + mean + np.finfo(np.float64).tiny
        if not np.all(np.abs(pa - pb) <= 256 * eps * scale):
            return False
    return True


def probe_independence(
    call: Callable[..., np.ndarray],
    x: np.ndarray,
    y0: np.ndarray,
    batch_axis: int,
    rng: np.random.Generator,
    eps: float,
    max_samples: int | None = None,
) -> tuple[bool, str]:
    """Whether ``call`` treats the samples along ``batch_axis`` independently.

    Parameters
    ----------
    call : callable
        ``call(x, borrow=False, rows=slice(None)) -> y`` (the counted, wrapped forward, on
        copies of the samples ``rows``; with ``borrow`` the output may be the layer's own
        buffer, used only until the next call).
    x, y0 : ndarray
        The input and ``call(x)``.
    batch_axis : int
    rng : numpy Generator
    eps : float
        Machine epsilon of the layer's dtype (outputs compared to ``256 eps``).
    max_samples : int, optional
        The stack is of the first ``k`` samples of each, ``k <= max_samples`` (memory), and
        ``2 k`` is not the batch size itself where there is a choice.

    Returns
    -------
    independent : bool
    reason : str
        One line for the report.

    Notes
    -----
    Three evaluations: ``x'`` (x with noise of 10 % of its spread), the stack ``[x, x']``
    (each half must reproduce ``y(x)`` and ``y(x')``: no batch statistics, any batch size),
    and, with two or more samples, ``x`` with sample 0 replaced by ``x'[0]`` (the other
    samples' outputs must not move). ``call`` raising a
    :class:`~checks.report.errors.LayerContractError` on ``x'`` or the swapped ``x`` propagates (the
    layer failed on an ordinary input); on the stack it is a "no" only when the layer refused
    the batch size (:data:`checks.engine.contract.REFUSALS`).
    """
    n = x.shape[batch_axis]
    if y0.ndim <= batch_axis or y0.shape[batch_axis] != n:
        return False, (
            f"one call per probe: output shape {y0.shape} has no batch axis {batch_axis} "
            f"of size {n}"
        )
    spread = float(np.std(x.astype(np.float64))) or 1.0
    xp = (x + 0.1 * spread * rng.standard_normal(x.shape)).astype(x.dtype)
    doubled = False  # whether the call in flight is the doubled batch
    try:
        yp = call(xp)
        doubled = True
        k = _stacked(n, max_samples)
        head = (slice(None),) * batch_axis + (slice(0, k),)
        ybig = call(
            np.concatenate([x[head], xp[head]], axis=batch_axis), borrow=True, rows=slice(0, k)
        )
        doubled = False
        if ybig.ndim <= batch_axis or ybig.shape[batch_axis] != 2 * k:
            return False, "one call per probe: output batch size does not follow the input's"
        first, second = np.split(ybig, 2, axis=batch_axis)
        if not (_close(first, y0[head], eps) and _close(second, yp[head], eps)):
            return False, "one call per probe: outputs depend on the other samples in the batch"
        del ybig, first, second, yp
        if n >= 2:
            xq = x.copy()
            idx: list[slice | int] = [slice(None)] * x.ndim
            idx[batch_axis] = 0
            xq[tuple(idx)] = xp[tuple(idx)]
            yq = call(xq, borrow=True)
            rest: list[slice | int] = [slice(None)] * y0.ndim
            rest[batch_axis] = slice(1, None)
            if not _close(yq[tuple(rest)], y0[tuple(rest)], eps):
                return False, "one call per probe: changing sample 0 changes other samples"
    except LayerContractError as exc:
        # x' and x with sample 0 swapped are ordinary inputs (x's shape and dtype): a raise
        # there is the layer failing, as on any call. The doubled batch is the checker's own
        # input, which a layer built for one batch size may refuse
        if not (doubled and contract.refused(exc)):
            raise
        cause = type(exc.__cause__).__name__
        return False, f"one call per probe: forward on a packed batch raised {cause}"
    except Exception as exc:  # the comparisons, on outputs of unexpected shapes
        return False, f"one call per probe: forward on a packed batch raised {type(exc).__name__}"
    return True, f"packed along batch_axis={batch_axis} (sample independence probed)"


def _stacked(n: int, max_samples: int | None) -> int:
    """Samples of ``x`` (and of ``x'``) in the probe's stack: all, or at most
    ``max_samples`` and, where there is a choice, not half the batch (the stack would have
    the batch's own size)."""
    if max_samples is None or max_samples >= n:
        return n
    k = max(1, max_samples)
    return k - 1 if 2 * k == n and k > 1 else k


def pack_copies(
    xf: np.ndarray, positions: np.ndarray, values: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """Copies of the batch, each with one position perturbed in every sample.

    Parameters
    ----------
    xf : ndarray, shape ``(N, S)``
        The input with the batch axis first and the sample flattened.
    positions : ndarray of int, shape ``(P,)``
        Flat positions within a sample.
    values : ndarray, shape ``(K, N, P)``
        The perturbed values: stencil point k, sample n, position p.
    dtype : numpy dtype
        dtype of the packed array (complex for the complex step).

    Returns
    -------
    ndarray, shape ``(1 + P * K, N, S)``
        Copy 0 is the unperturbed batch (the baseline evaluated in the same call, so that both
        see the same blocking of the linear algebra); copy ``1 + p * K + k`` has
        ``x[n, positions[p]] = values[k, n, p]`` for every n.
    """
    k, n, p = values.shape
    big = np.empty((1 + p * k, n, xf.shape[1]), dtype=dtype)
    big[:] = xf[None]
    rows = 1 + np.arange(p)[:, None, None] * k + np.arange(k)[None, :, None]
    big[rows, np.arange(n)[None, None, :], positions[:, None, None]] = values.transpose(2, 0, 1)
    return big


def unpack_outputs(ybig: np.ndarray, copies: int, batch_axis: int) -> np.ndarray:
    """``(copies, N, R)`` view of an output whose batch axis holds ``copies`` stacked batches."""
    y = np.moveaxis(ybig, batch_axis, 0)
    return y.reshape(copies, y.shape[0] // copies, -1)


class Copies:
    """Packed copies of the samples ``rows`` of tensor ``name``, built where the forward call
    runs: an executor's worker builds them from its own copy of the tensor, so a call ships
    positions and values, not the copies (:mod:`checks.engine.dispatch`).

    Copy 0 is the unperturbed samples; then either one copy per spec ``(positions, values
    (rows, len(positions)))`` (``specs``), or :func:`pack_copies`'s copies of ``stencil``
    ``(positions, values (K, rows, P))``. ``xf``, the tensor as ``(N, S)`` with the batch
    first, is the caller's (it is not pickled).
    """

    def __init__(
        self,
        name: str,
        batch_axis: int,
        rows: slice,
        dtype: np.dtype,
        *,
        specs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
        stencil: tuple[np.ndarray, np.ndarray] | None = None,
        xf: np.ndarray | None = None,
    ) -> None:
        self.name, self.batch_axis, self.rows, self.dtype = name, batch_axis, rows, dtype
        self.specs, self.stencil, self.xf = specs, stencil, xf
        k_p = 0 if stencil is None else stencil[1].shape[0] * stencil[0].size
        #: copies of the samples in the built input
        self.copies = 1 + len(specs) + k_p

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "xf": None}

    def nbytes(self, s: int) -> int:
        """Bytes of the built input (``s`` elements per sample)."""
        return self.copies * (self.rows.stop - self.rows.start) * s * np.dtype(self.dtype).itemsize

    def build(self, tensor: np.ndarray) -> np.ndarray:
        """The packed input, from ``tensor`` (the target's value of ``name``)."""
        ba, rows = self.batch_axis, self.rows
        xb = np.moveaxis(tensor, ba, 0)
        if self.xf is not None:
            xr = self.xf[rows]
        else:
            xr = xb[rows].reshape(rows.stop - rows.start, -1)
        if self.stencil is not None:
            big = pack_copies(xr, self.stencil[0], self.stencil[1], self.dtype)
        else:
            big = np.empty((self.copies, *xr.shape), dtype=self.dtype)
            big[:] = xr[None]
            for i, (pos_i, vals_i) in enumerate(self.specs):
                big[1 + i][:, pos_i] = vals_i
        return np.moveaxis(big.reshape((-1, *xb.shape[1:])), 0, ba)
