"""Many elements per forward call when their effects on the output are disjoint.

Perturbing one element of ``x`` in a conv changes only a small window of the output. Elements
far enough apart (a lattice with a period of at least the kernel size) change disjoint sets of
outputs, so they can be perturbed *together* in one copy, and the change of ``phi`` can still be
split element by element -- provided we know which element moved which output. That is the
column-compression idea of Curtis, Powell and Reid (1974) for sparse Jacobians.

Nothing about the layer is assumed. Each group's sources are *measured* with ``B =
ceil(log2 g)`` code probes: probe ``b`` perturbs the members whose index in the group has bit
``b`` set, so every output that moves reads off the index of the member that moved it; ``B``
complement probes (bit ``b`` clear) verify the reading, since a single-source output answers
exactly one of each pair (tied maxima, ``max(p + h, q) == max(p, q + h)``, answer both). An
output that responds to a subset of the group differently from the whole group, responds to
a code probe but not to the whole group, or moves under a stencil point without a source,
proves the footprints overlap; that group then falls back to one perturbation per element. A
grouping (a lattice period, or grouping parameters along their first axis) is first tried on
one group and used only when that trial shows no overlap.

The real methods take their code probes (and complements) at ``+2h`` and again at ``-2h``,
each against the whole group moved by the same step: an output's source is read at ``+2h``
where it moves at ``+2h``, at ``-2h`` where it moves at ``-2h``, and the two readings must
agree where both apply. Probes at ``+h`` alone (as before) left every output that moves at
``-h`` or ``+-2h`` but not at ``+h`` without a source: a ReLU pre-activation that crosses 0
only on the negative side or only between ``h`` and ``2h``, a max that changes hands there.
That made the whole group a conflict, and on a float32 ReLU conv (4 -> 8 maps, 3x3, 16x16
inputs, ~28 members per group) every group at every step fell back, so grouping cost more
than it saved. Along the stencil's line a ReLU of an affine map (any monotone function of one)
is monotone, so an output that moves at ``+h`` also moves at ``+2h`` and one that moves at
``-h`` also at ``-2h``; a convex (or concave) output, such as a max-pool of such ReLUs, that
moves at neither ``+-2h`` does not move at ``+-h`` either. Every output that moves is then
read at one or both of ``+-2h``; an output that moves at some stencil point and is read at
neither (a non-monotone output that returns to its value at ``+-2h``) is still a conflict. The
readings also *verify* the footprints at two stencil points instead of one: a max-pool whose
windows are shared by two members (a 3x3 conv and 2x2 pool grouped with period 3) passed the
``+h`` checks while the max changed hands at ``-2h``, and the member read at ``+h`` was
credited with the other member's change (one-sided slopes at ``-2h`` up to 3e4 times their
rounding noise off those of single perturbations, 133 of 1e5 slopes, in 40 float32 ReLU convs
3 -> 4 maps on 2x3x8x8 inputs, each followed by a 2x2 max-pool). Checked at ``+-2h`` such
groups fall back. The price is ``2 B`` more real copies per group (:func:`worth_grouping`
counts them). The complex step, with its single ``+h`` evaluation, and the trials of
:mod:`checks.engine.trials` keep the code probes at ``+h``.

Notes
-----
With disjoint footprints ``y_j`` depends on the group only through its source ``s(j)``, so the
perturbed output equals the one of perturbing ``s(j)`` alone, bit for bit up to the blocking
of the linear algebra, for any nonlinear layer: the per-element differences
``r_i = sum_{j: s(j) = i} dy_j (y_j^+ - y_j)`` are exactly those of single perturbations.
Outputs that move by less than the decoding threshold (:func:`_threshold`: 4 ulps of ``|y_j|``
plus 8 ulps of the sample's mean ``|y|``) at each probe point are not attributed (and
with no conflict they move by less than that at every stencil point). What they leave out of
the numerators is not always below the rounding already in the error estimate (that counts
only the attributed outputs; a float32 max-pool after a ReLU conv lost 0.9 % of a small
element of dx this way), so ``sum_j |dy_j| |y_j^+ - y_j|`` over the unattributed outputs of a
sample, at each stencil point, is added to the numerator noise of every member of the group in
that sample (the complex step, which has no such noise floor, sends a group with any
unattributed imaginary part to the fallback instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from checks.engine import finite_diff

__all__ = [
    "axis0_groups",
    "copies",
    "decode",
    "evaluate_groups",
    "lattice_groups",
    "specs_for",
    "worth_grouping",
]

Spec = tuple[np.ndarray, np.ndarray]


class Owners(Protocol):
    """Maps of outputs to cells (see :class:`checks.engine.trials.OwnerMaps`)."""

    cell_of: np.ndarray
    n_cells: int  # cells in the largest map

    def __call__(self, pos: np.ndarray) -> np.ndarray | None: ...


RunFn = Callable[..., tuple[np.ndarray, np.ndarray]]
"""``run(specs, complex[, rows]) -> (bases (C, M, R), ys (C, M, R))``: one row per spec;
``bases`` is the unperturbed output evaluated in the same call as that spec; with ``rows`` (a
slice) only those samples (``M`` = their number)."""

_FIELDS = ("value", "error", "magnitude", "left", "right", "left2", "right2",
           "onesided_noise", "central", "central2")  # fmt: skip
_ULPS = 4.0
#: ... and of the outputs' rounding scale, a sample's mean ``|y|`` (see :func:`_threshold`):
#: twice what :class:`PositionRounded` in the meta-tests simulates; 16 cost a 1 % error in
#: one element of dx of a float32 ReLU conv its detection in 2 of 30 seeds
_FLOOR_ULPS = 8.0
#: Python cost of decoding one group, in input elements pushed through forward (~0.2 ms)
GROUP_OVERHEAD = 6000.0
#: cost of a complex copy relative to a real one
COMPLEX_WEIGHT = 2.0


def worth_grouping(g: int, kind: str, copy_cost: float, mapped: bool = False) -> bool:
    """Whether evaluating ``g`` elements as one group costs less than one by one.

    Costs are in input elements pushed through forward (plus a fixed per-call overhead the
    caller folds into ``copy_cost``). A group needs ``ceil(log2 g)`` real code probes and as
    many complements at each probe point (``+2h`` and ``-2h`` for the real methods, ``+h``
    for the complex step) plus its stencil (for the complex step one real +h copy and one
    complex copy, a complex copy costing ``COMPLEX_WEIGHT`` real ones, ~1.75 measured on a
    small cnn_ref conv) and its decoding in Python (``GROUP_OVERHEAD`` elements' worth); one
    by one costs ``g`` times the stencil. Sizes only, never timings, so the choice (and every
    number) is reproducible. ``mapped``: the sources are known (no code probes, and for the
    complex step no real copy).
    """
    if g < 2:
        return False
    # code probes and their complements at every probe point
    bits = 0 if mapped else 2 * math.ceil(math.log2(g)) * len(_probe_points(kind))
    if kind == "complex":
        grouped = (bits + (not mapped) + COMPLEX_WEIGHT) * copy_cost + GROUP_OVERHEAD
        return grouped < COMPLEX_WEIGHT * g * copy_cost
    n_st = len(finite_diff.REAL_STENCIL)
    return (bits + n_st) * copy_cost + GROUP_OVERHEAD < n_st * g * copy_cost


def lattice_groups(sample_shape: tuple[int, ...], period: int) -> list[np.ndarray]:
    """Flat positions grouped by a lattice of ``period`` on the last (up to two) axes.

    Every index of the leading axes (channels) is a group of its own.
    """
    nd = len(sample_shape)
    idx = np.indices(sample_shape).reshape(nd, -1)
    n_sp = min(2, nd)
    key = [idx[a] for a in range(nd - n_sp)] + [idx[a] % period for a in range(nd - n_sp, nd)]
    keys = np.ravel_multi_index(key, tuple(sample_shape[: nd - n_sp]) + (period,) * n_sp)
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    return [g for g in np.split(order, bounds) if g.size]


def axis0_groups(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Flat indices grouped so that each group holds one element per index of axis 0."""
    if len(shape) == 0:
        return [np.zeros(1, dtype=np.intp)]
    n0 = shape[0]
    rest = math.prod(shape[1:])
    flat = np.arange(n0 * rest).reshape(n0, rest)
    return [flat[:, k] for k in range(rest)]


def _probe_points(kind: str) -> tuple[int, ...]:
    """Stencil indices at which a group's code probes are taken: ``+2h`` and ``-2h`` for the
    real methods (see the module notes), ``+h`` for the complex step and the trial."""
    if kind == "complex":
        return (0,)
    return (finite_diff.REAL_STENCIL.index(2.0), finite_diff.REAL_STENCIL.index(-2.0))


def specs_for(
    t: np.ndarray, pos: np.ndarray, kind: str, rule, mapped: bool = False
) -> tuple[list[Spec], list[Spec], dict]:
    """Real specs (stencil + code probes) and complex specs for one group.

    The real specs are the stencil points (the whole group moved; only ``+h`` for the complex
    step), then for each probe point of :func:`_probe_points` the ``B`` code probes and their
    ``B`` complements, the members moved by that point's own step (the same values as in the
    stencil copy, so a single-source output repeats that copy bit for bit). ``mapped``: the
    sources are known (``evaluate_groups``'s ``owners``): no code probes, and for the complex
    step no real copy either.
    """
    g = pos.size
    n_bits = max(0, math.ceil(math.log2(g))) if g > 1 and not mapped else 0
    tg = t[:, pos]
    h = finite_diff.step_sizes(tg, rule.h_central)
    vals, taken = finite_diff.perturbed_values(tg, h, finite_diff.REAL_STENCIL)
    real: list[Spec] = []
    stencil = range(len(finite_diff.REAL_STENCIL)) if kind != "complex" else range(1 - mapped)
    for k in stencil:
        real.append((pos, vals[k]))
    codes = np.arange(g)
    points = _probe_points(kind)
    for k in points:
        for b in range(n_bits):
            sel = ((codes >> b) & 1).astype(bool)
            real.append((pos[sel], vals[k][:, sel]))
        # the complements: a single-source output answers exactly one of (code b, complement
        # b); an output moved by two members that differ in bit b answers both or neither --
        # which is how tied maxima (max(p + h, q) == max(p, q + h) == max(p + h, q + h)) are
        # caught
        for b in range(n_bits):
            sel = ~((codes >> b) & 1).astype(bool)
            real.append((pos[sel], vals[k][:, sel]))
    cplx: list[Spec] = []
    info = {"n_bits": n_bits, "taken": taken, "g": g, "points": points, "mapped": mapped}
    if kind == "complex":
        hc = finite_diff.step_sizes(tg, rule.h_complex)
        cv = tg.astype(rule.complex_dtype) + 1j * hc.astype(rule.complex_dtype)
        cplx.append((pos, cv))
        info["hc"] = hc
    return real, cplx, info


def _threshold(base: np.ndarray, y: np.ndarray, eps: float, floor: np.ndarray) -> np.ndarray:
    """The decoding threshold: a change below it is rounding, not a move.

    ``eps (4 max(|y_0|, |y|) + 8 floor)``, ``floor`` a sample's mean ``|y_0|``. The same
    sample is rounded differently at another batch position (a BLAS kernel blocks the columns
    of a wide product differently, and its thread count changes the blocking), and an output
    small by cancellation carries the rounding of its terms, not of its own size: 4 ulps of
    ``|y_j|`` alone made every unperturbed output of a copy look moved on one OpenBLAS
    thread, and every group of a float32 ReLU conv fell back. The floor is the rounding
    scale the error estimate already uses for such outputs (``ybar`` in
    :func:`checks.engine.finite_diff.numerator_noise`); what moves less is charged to the noise.
    """
    return eps * (_ULPS * np.maximum(np.abs(base), np.abs(y)) + _FLOOR_ULPS * floor)


def _floor(base: np.ndarray, positions_differ: bool) -> np.ndarray:
    """Each sample's mean ``|y_0|``, shape ``(G, M, 1)`` for outputs ``(G, M, R)`` of ``G``
    groups; zero when every copy is evaluated at the same batch positions as the unperturbed
    output (parameters: one whole forward per copy), where nothing rounds it differently and a
    floor would only send small but real changes to the noise (a 1 % error in a float32
    conv's K went unseen)."""
    if not positions_differ or not base.size:
        return np.zeros((*base.shape[:-1], 1))
    return np.mean(np.abs(base), axis=-1, keepdims=True)


def _moved(base: np.ndarray, y: np.ndarray, eps: float, floor: np.ndarray) -> np.ndarray:
    """Outputs that moved by more than the decoding threshold (:func:`_threshold`)."""
    return np.abs(y - base) > _threshold(base, y, eps, floor)


def _per_group(a: np.ndarray) -> np.ndarray:
    """``a`` (bool, ``(G, ...)``) reduced to whether any element of each group is set."""
    return np.asarray(np.any(a.reshape(a.shape[0], -1), axis=1))


def _read_sources(
    base: np.ndarray,
    full: np.ndarray,
    code_bases: np.ndarray,
    code_ys: np.ndarray,
    eps: float,
    g: np.ndarray,
    floor: np.ndarray,
    disc: np.ndarray,
    conflict: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sources read from one probe point's ``B`` code probes and ``B`` complements, for ``G``
    groups of the same ``B`` at once (each on its own arrays: nothing mixes groups).

    Parameters
    ----------
    base, full : ndarray, shape ``(G, M, R)``
        The unperturbed output and the output with the whole group moved by the point's step.
    code_bases, code_ys : ndarray, shape ``(G, 2 B, M, R)``
        Unperturbed output and output of every code probe, then of every complement, at the
        same step.
    eps : float
        Machine epsilon of the layer's dtype.
    g : ndarray of int, shape ``(G, 1, 1)``
        Members in each group.
    floor : ndarray, shape ``(G, M, 1)``
        The outputs' rounding scale per sample (see :func:`_threshold`).
    disc : ndarray, shape ``(G, M, R)``
        Raised in place, at the outputs that moved, to the largest distance of a probe's
        change from what a single source implies (the whole group's change, or none):
        rounding at another batch position, or a second source too small to prove an
        overlap. Crediting the whole change to ``src`` is off by at most this much; the
        caller charges it to the noise.
    conflict : ndarray of bool, shape ``(G,)``
        Set in place for the groups where some output proves that two members' footprints
        overlap (what is read for them is then meaningless, and dropped by the caller).

    Returns
    -------
    src : ndarray of int32
        The member read for each output that moved with the whole group (0 elsewhere).
    aff : ndarray of bool
        The outputs that moved with the whole group.
    """
    n_bits = code_ys.shape[1] // 2
    d_full = full - base
    thr = _threshold(base, full, eps, floor)
    aff = np.abs(d_full) > thr
    src = np.zeros(base.shape, dtype=np.int32)
    bad = np.zeros_like(aff)  # the outputs that prove an overlap, gathered
    for b in range(n_bits):
        ons = []
        for k in (b, n_bits + b):  # the code probe, then its complement
            # distances of the probe's change to none (a) and to the whole group's (e)
            a = code_ys[:, k] - code_bases[:, k]
            e = np.subtract(a, d_full)
            np.abs(a, out=a)
            np.abs(e, out=e)
            # a single-source output moves under a probe as under the whole group or not at
            # all, to rounding: a change near neither proves two sources. Each probe is judged
            # by its distance to both (not by the threshold alone), since the same change
            # rounded at another batch position may land on either side of the threshold.
            bad |= (a > thr) & (e > thr)
            on = e < a
            ons.append(on)
            # the distance to what the reading implies: in place (these arrays are the size
            # of a group's outputs, which the memory budget counts)
            np.copyto(a, e, where=on)
            np.maximum(disc, a, out=disc, where=aff)
            del a, e
        on, on_c = ons
        # exactly one of a code and its complement holds the source (tied maxima: both)
        bad |= aff & (on == on_c)
        on &= aff
        src |= on.astype(np.int32) << b
        del on, on_c, ons
    bad |= aff & (src >= g)
    conflict |= _per_group(bad)
    return src, aff


def decode(
    bases: np.ndarray,
    ys: np.ndarray,
    n_stencil: int,
    n_bits: int,
    eps: float,
    g: int | np.ndarray,
    points: Sequence[int] = (0,),
    positions_differ: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sources of every output (``-1``: none), which outputs have one, the largest discrepancy
    of a reading at any probe point (``(G, M, R)``, see :func:`_read_sources`), and whether the
    footprints of each group overlap (``(G,)``), for ``G`` groups of ``g`` members (an int, or
    one per group) with the same ``n_bits``, their copies ``bases``, ``ys`` of shape
    ``(G, C, M, R)``.

    ``points`` are the stencil indices whose step the code probes used, in the order of the
    probes after the ``n_stencil`` stencil rows. An output's source is read at every point
    where it moved with the whole group, and the readings must agree; an output that moved at
    any stencil point but was read at none is a conflict. Decoding many groups at once is
    what keeps it cheap: one group's arrays are small, and numpy's per-call cost dominated.
    """
    shape = (bases.shape[0], *bases.shape[2:])
    src = np.full(shape, -1, dtype=np.int32)
    attributed = np.zeros(shape, dtype=bool)
    disc = np.zeros(shape)
    conflict = np.zeros(shape[0], dtype=bool)
    gs = np.broadcast_to(np.asarray(g), (shape[0],)).reshape(-1, 1, 1)
    floor = _floor(bases[:, 0], positions_differ)
    per = 2 * n_bits
    for i, k in enumerate(points):
        rows = slice(n_stencil + i * per, n_stencil + (i + 1) * per)
        src_k, aff_k = _read_sources(
            bases[:, k], ys[:, k], bases[:, rows], ys[:, rows], eps, gs, floor, disc, conflict
        )
        conflict |= _per_group(aff_k & attributed & (src_k != src))
        np.copyto(src, src_k, where=aff_k)
        attributed |= aff_k
        del src_k, aff_k
    for k in range(n_stencil):
        conflict |= _per_group(_moved(bases[:, k], ys[:, k], eps, floor) & ~attributed)
    return src, attributed, disc, conflict


class _BySource:
    """``self(w)[..., m, i] = sum_j w[..., m, j] [src[..., m, j] == i]`` for every sample m
    (of every group), summed in the order of ``j``; the bins are found once for every ``w``."""

    def __init__(self, src: np.ndarray, g: int) -> None:
        lead = src.shape[:-1]
        self.ok = src >= 0
        rows = np.arange(math.prod(lead)).reshape(*lead, 1)
        self.key = (rows * g + np.where(self.ok, src, 0))[self.ok]
        self.shape = (*lead, g)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        w = np.broadcast_to(w, self.ok.shape)
        out = np.bincount(self.key, weights=w[self.ok], minlength=math.prod(self.shape))
        return out.reshape(self.shape)


def _complex_fields(
    yc: np.ndarray,
    src: np.ndarray,
    g: int,
    dy: np.ndarray,
    ady: np.ndarray,
    hc: np.ndarray,
    t: np.ndarray,
    rule,
) -> finite_diff.FDResult:
    """Complex-step fields of the members (``g`` columns, padded) of groups from their
    complex copies ``yc`` (G, M, R)."""
    by_source = _BySource(src, g)
    im = yc.imag.astype(np.float64, copy=False)
    im_num = by_source(dy * im)
    abs_num = by_source(ady * np.abs(im))
    re = np.where(im != 0, np.abs(yc.real), 0.0)
    out_num = by_source(ady * re)
    return finite_diff.combine_complex(
        im_num, abs_num, hc, rule.eps, out_num, t, forward_eps=rule.analytic_eps
    )


def _real_fields(
    ys: np.ndarray,
    bases: np.ndarray,
    src: np.ndarray,
    aff: np.ndarray,
    disc: np.ndarray,
    g: int,
    taken: np.ndarray,
    dy: np.ndarray,
    ybar: float,
    rule,
    kind: str,
    dy_random: bool,
) -> finite_diff.FDResult:
    """Real-stencil fields of the members (``g`` columns, padded) of groups from their
    stencil copies ``ys`` (G, 4, M, R); ``taken`` is (4, G, M, g)."""
    n_st = len(finite_diff.REAL_STENCIL)
    ady = np.abs(dy)
    by_source = _BySource(src, g)
    r = np.stack([by_source(dy * (ys[:, k] - bases[:, k])) for k in range(n_st)])
    # outputs that moved below the decoding threshold belong to no member: what they leave
    # out of the numerators is charged to every member of the sample
    lost = [
        np.sum(np.where(aff, 0.0, ady * np.abs(ys[:, k] - bases[:, k])), axis=-1)
        for k in range(n_st)
    ]
    # and a reading's discrepancy (rounding at other batch positions, a second source below
    # the threshold) to the member credited with the output, at every stencil point (those
    # without probes are not observed)
    misread = by_source(ady * disc)
    mags, noises, typical = [], [], []
    resolution = finite_diff.forward_resolution(rule.h_central, rule.analytic_eps)
    for (a, b), res in zip(((0, 1), (2, 3)), resolution, strict=True):
        ya, yb = ys[:, a], ys[:, b]
        mags.append(by_source(ady * np.abs(ya - yb)))
        nz, ty = finite_diff.numerator_noise(
            ya, yb, dy, ybar, rule.eps, by_source, dy_random=dy_random, resolution=res
        )
        extra = (lost[a] + lost[b])[..., None] + 2.0 * misread
        noises.append(nz + extra)
        typical.append(ty + extra)
    return finite_diff.combine_real(
        r, taken, np.stack(mags), np.stack(noises), method=kind, typical_num=np.stack(typical)
    )


def _padded(parts: Sequence[np.ndarray], width: int, fill: float) -> np.ndarray:
    """``parts`` (each ``(..., g_i)``) stacked on a new axis before the last two, the last
    axis padded to ``width`` with ``fill``."""
    out = np.full((*parts[0].shape[:-2], len(parts), *parts[0].shape[-2:-1], width), fill)
    for i, a in enumerate(parts):
        out[..., i, :, : a.shape[-1]] = a
    return out


#: a group of complex copies only (the complex step reading a map) against the outputs' budget
#: of the scratch, which counts a group's copies at 10 bytes each (one complex among several
#: real ones, see checks.engine.evaluation.Chunks): 16 bytes each
_ALL_COMPLEX = 1.6

#: float64 arrays of the size of a group's copy that decoding it holds at once (the sources
#: and readings of :func:`decode`, the temporaries of :func:`_real_fields`; ~10 counted)
_DECODE_TEMPS = 16

_Group = tuple[np.ndarray, list[Spec], list[Spec], dict]


def _owned_sources(
    part: Sequence[_Group],
    rows: slice,
    bases: np.ndarray,
    ys: np.ndarray,
    eps: float,
    positions_differ: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`decode`'s answer for groups whose sources are known: each group's map gives
    the cell that moves each output of the samples ``rows`` (``-1`` none), and its members'
    cells. An output is read as its owner's, if the owner is a member; an output that moves
    at some stencil point (``ys``, ``(G, C, M, R)``, only the stencil) without a member owning
    it proves the map wrong for that group (a conflict)."""
    src = np.empty((len(part), *bases.shape[2:]), dtype=np.int32)
    for gi, (pos, _, _, info) in enumerate(part):
        lut = np.full(info["n_cells"] + 1, -1, dtype=np.int32)  # lut[-1]: no owner
        lut[info["cells"]] = np.arange(pos.size)
        src[gi] = lut[info["owners"][rows]]  # cells of no member: -1
    aff = src >= 0
    floor = _floor(bases[:, 0], positions_differ) if ys.shape[1] else np.zeros(0)
    unowned = np.zeros_like(aff)
    for k in range(ys.shape[1]):
        unowned |= _moved(bases[:, k], ys[:, k], eps, floor) & ~aff
    return src, aff, np.zeros(src.shape), _per_group(unowned)


def _decode_groups(
    part: Sequence[_Group],
    skip: np.ndarray,
    bases: np.ndarray,
    ys: np.ndarray,
    yc: np.ndarray | None,
    rows: slice,
    out: dict[str, np.ndarray],
    where: np.ndarray | None,
    setting: tuple,
) -> np.ndarray:
    """Decode groups of the same number of copies together (``bases``, ``ys``: (G, C, M, R);
    ``yc``: their complex copies (G, M, R)) and write the fields of those without a conflict
    and not in ``skip`` into ``out``; return which conflict."""
    t_r, dy_r, ybar, rule, kind, dy_random, positions_differ, rows = setting
    info0 = part[0][3]
    gs = np.array([info["g"] for _, _, _, info in part])
    n_st = 1 if kind == "complex" else len(finite_diff.REAL_STENCIL)
    bases = bases.astype(np.float64, copy=False)
    ys = ys.astype(np.float64, copy=False)
    if info0["mapped"]:
        src, aff, disc, conflict = _owned_sources(part, rows, bases, ys, rule.eps,
                                                  positions_differ)  # fmt: skip
    else:
        src, aff, disc, conflict = decode(bases, ys, n_st, info0["n_bits"], rule.eps, gs,
                                           info0["points"], positions_differ)  # fmt: skip
    if yc is not None:
        conflict |= _per_group((yc.imag != 0) & ~aff)
    keep = np.flatnonzero(~conflict & ~skip)
    if not keep.size:
        return conflict
    src[conflict] = -1  # what was read there is meaningless, and may name no member
    gmax = int(gs.max())
    if kind == "complex":
        assert yc is not None
        hc = _padded([info["hc"][rows] for _, _, _, info in part], gmax, 1.0)
        tg = _padded([t_r[:, pos] for pos, _, _, _ in part], gmax, 0.0)
        fd = _complex_fields(yc, src, gmax, dy_r, np.abs(dy_r), hc, tg, rule)
    else:
        taken = _padded([info["taken"][:, rows] for _, _, _, info in part], gmax, 1.0)
        fd = _real_fields(ys, bases, src, aff, disc, gmax, taken, dy_r, ybar, rule, kind,
                          dy_random)  # fmt: skip
    for gi in keep.tolist():
        pos = part[gi][0]
        dest = pos if where is None else where[pos]
        for f in _FIELDS:
            v = getattr(fd, f)
            if v is not None:
                out[f][rows, dest] = v[gi, :, : gs[gi]]
    return conflict


def evaluate_groups(
    run: RunFn,
    t: np.ndarray,
    groups: Sequence[np.ndarray],
    kind: str,
    rule,
    dy: np.ndarray,
    ybar: float,
    max_elements: int,
    dy_random: bool = False,
    out: dict[str, np.ndarray] | None = None,
    where: np.ndarray | None = None,
    positions_differ: bool = True,
    decode_elements: int = 0,
    owners: Owners | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Finite differences of every group's members, a few groups per forward call, decoded
    many groups at once (one at a time, numpy's per-call cost on the small arrays of a group
    made up a third of a small function's check).

    Parameters
    ----------
    run : callable
        ``run(specs, complex) -> (bases (C, M, R), ys (C, M, R))`` evaluates copies; each spec
        is ``(positions, values (M, len(positions)))`` perturbing those positions of every
        sample; ``bases[c]`` is the unperturbed output from the same call. Called as
        ``run(specs, complex, rows)`` with a slice of the samples when one group's copies of
        every sample would exceed ``max_elements``; it then returns ``(C, rows, R)``.
    t : ndarray, shape ``(M, S)``
        The tensor, samples first, positions flattened.
    groups : sequence of int arrays
        Positions to evaluate together.
    kind : {"complex", "central", "richardson"}
    rule : DtypeRule
    dy : ndarray, shape ``(M, R)``, float64
    ybar : float
        Mean ``|y|`` (rounding floor of outputs small by cancellation).
    max_elements : int
        Output elements (copies x samples x outputs) held at once (memory bound): groups
        are batched up to it, and a group that alone exceeds it is evaluated a slice of the
        samples at a time (the samples are independent: the decoding and the differences of
        one sample never read another's outputs).
    dy_random : bool
        ``dy`` is the checker's own Gaussian draw (see :func:`finite_diff.numerator_noise`).
    out : dict of ndarray, optional
        Fields to fill (arrays ``(M, S')``, the keys of the fields ``kind`` produces) instead
        of allocating ``(M, S)`` arrays of every field.
    where : ndarray of int, optional
        With ``out``: the column of ``out`` of each position.
    positions_differ : bool
        Copies sit at other batch positions than the unperturbed output (packed copies of
        ``x``), so their unperturbed outputs may round differently (see :func:`_threshold`).
    decode_elements : int
        float64 elements the temporaries of decoding may take at once besides the batch's
        outputs (packed copies: what the forward calls' half of the scratch leaves free),
        when more than ``max_elements`` leaves; at least one group's are always taken.
    owners : Owners, optional
        Where the sources are known, not measured: the map of outputs to cells each group
        reads them off (:class:`checks.engine.trials.OwnerMaps`; a group holds at most one
        position per cell). A group with a map takes its stencil only, and fails where an
        output moves that no member owns; one whose map is ``None`` measures its sources.

    Returns
    -------
    fields : dict of ndarray ``(M, S)``
        NaN outside the evaluated positions (``out`` when given; there the columns of
        failed groups are NaN too).
    failed : ndarray of int
        Positions of groups whose footprints overlapped (evaluate them one by one).
    """
    m, s = t.shape
    if out is None:
        out = {f: np.full((m, s), np.nan) for f in _FIELDS}
    failed: list[np.ndarray] = []
    batch: list[tuple[np.ndarray, list[Spec], list[Spec], dict]] = []
    out_per_sample = dy.shape[1]

    def flush() -> None:
        if not batch:
            return
        n_rows = sum(len(r) + len(c) for _, r, c, _ in batch)
        if any(info["owners"] is not None for _, _, _, info in batch):
            # groups reading a map hold so few copies that the samples would not be cut:
            # one group's decoding temporaries for the samples of a slice count too
            n_rows = math.ceil(_ALL_COMPLEX * n_rows) + _DECODE_TEMPS
        step = max(1, min(m, max_elements // max(1, n_rows * out_per_sample)))
        bad = np.zeros(len(batch), dtype=bool)
        for m0 in range(0, m, step):
            rows = slice(m0, min(m, m0 + step))
            bad |= flush_rows(rows, step < m, bad)
        for gi, (pos, _, _, _) in enumerate(batch):
            if bad[gi]:
                failed.append(pos)
                if step < m:  # an earlier slice of the samples may have been filled
                    for v in out.values():
                        v[:, pos if where is None else where[pos]] = np.nan
        batch.clear()

    def flush_rows(rows: slice, sliced: bool, skip: np.ndarray) -> np.ndarray:
        """Evaluate the batch on the samples ``rows``; which groups conflict there."""
        conflicts = np.zeros(len(batch), dtype=bool)
        real_specs = [sp for _, r, _, _ in batch for sp in r]
        args = (rows,) if sliced else ()
        if real_specs:
            bases_all, ys_real = run(real_specs, False, *args)
        else:  # the complex step with known sources: its complex copies only
            bases_all = ys_real = np.empty((0, len(range(m)[rows]), out_per_sample))
        ys_cplx = None
        if kind == "complex":
            _, ys_cplx = run([sp for _, _, c, _ in batch for sp in c], True, *args)
        # groups of the same number of copies (and way of reading sources) side by side are
        # decoded together, as many at once as their temporaries fit in the room for them
        sizes = [len(r) for _, r, _, _ in batch]
        ways = [info["owners"] is None for _, _, _, info in batch]
        offs = np.cumsum([0, *sizes])
        one = math.prod(ys_real.shape[1:])
        room = max_elements - (offs[-1] + len(batch) * (kind == "complex")) * one
        at_once = max(1, max(room, decode_elements) // (_DECODE_TEMPS * one))
        i0 = 0
        while i0 < len(batch):
            i1 = i0 + 1
            while (
                i1 < len(batch)
                and i1 - i0 < at_once
                and (sizes[i1], ways[i1]) == (sizes[i0], ways[i0])
            ):
                i1 += 1
            shape = (i1 - i0, sizes[i0], *ys_real.shape[1:])
            sel = slice(offs[i0], offs[i1])
            bases, ys = bases_all[sel].reshape(shape), ys_real[sel].reshape(shape)
            conflicts[i0:i1] = _decode_groups(
                batch[i0:i1], skip[i0:i1], bases, ys,
                None if ys_cplx is None else ys_cplx[i0:i1], rows, out, where,
                (t[rows], dy[rows], ybar, rule, kind, dy_random, positions_differ, rows),
            )  # fmt: skip
            i0 = i1
        return conflicts

    budget = 0
    for pos in groups:
        own, cells = None, None
        if owners is not None:
            own, cells = owners(pos), owners.cell_of[pos]
        real, cplx, info = specs_for(t, pos, kind, rule, mapped=own is not None)
        info["owners"], info["cells"] = own, cells
        if owners is not None:
            info["n_cells"] = owners.n_cells
        cost = (len(real) + len(cplx)) * m * out_per_sample
        if own is not None and not real:  # complex copies only: counted at their full size
            cost = math.ceil(_ALL_COMPLEX * cost)
        if own is not None and (not batch or batch[-1][3]["owners"] is not own):
            cost += own.nbytes // 8  # a map the batch holds (in float64 outputs' worth)
        if batch and budget + cost > max_elements:
            flush()
            budget = 0
        batch.append((pos, real, cplx, info))
        budget += cost
    flush()
    fail = np.concatenate(failed) if failed else np.zeros(0, dtype=np.intp)
    return out, fail


def copies(g: int, kind: str, mapped: bool = False) -> int:
    """Copies (rows of outputs held for decoding) that :func:`evaluate_groups` takes for a
    group of ``g``: the stencil, the code probes and their complements at every probe point,
    and for the complex step its complex copy (``mapped``: sources known, no probes and for
    the complex step no real copy)."""
    n_bits = math.ceil(math.log2(g)) if g > 1 and not mapped else 0
    bits = 2 * n_bits * len(_probe_points(kind))
    return bits + (2 - mapped if kind == "complex" else len(finite_diff.REAL_STENCIL))
