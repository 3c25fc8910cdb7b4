"""Which groupings hold: the trials that decide whether elements can share a forward call.

:mod:`checks.engine.grouping` evaluates groups of elements with disjoint footprints; this
module finds the groupings. A lattice period (for ``x``, :func:`try_periods`) or a grouping
of parameters along their first axis (:func:`trial_overlaps`) is tried on one group and used
only when that trial shows no overlap; every group then measures its own sources with code
probes and falls back where they overlap.

Parameters grouped along their first axis can do without the code probes (a quarter of the
copies of a conv's kernel, whose groups have one member per output map, are its stencil and
three quarters its probes). :func:`slice_owners` probes whole slices ``t[o]`` once, with
code probes over the slice index ``o``: when no output answers two slices, it returns the
slice that moves each output, and a group holding one element of each slice reads its
members' outputs off that map (:func:`checks.engine.grouping.evaluate_groups`'s
``owners``). The slices are moved by steps scaled by random factors in ``[1/2, 1]``, so no
two elements' changes cancel by construction (equal weights of a difference, say): an
element's footprint then lies in its slice's. Where it does not (a ReLU's kink crossed by
one element but not by its slice), the output moves in a group without an owner, and that
group falls back to one element at a time; each group is verified so, at every stencil
point. The map is not used to refine suspect elements (they are few, and decoded anew).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from checks.engine import finite_diff, grouping
from checks.engine.grouping import (
    RunFn,
    copies,
    decode,
    lattice_groups,
    specs_for,
    worth_grouping,
)

__all__ = [
    "OwnerMaps",
    "cell_owners",
    "pays",
    "probe_copies",
    "probe_fits",
    "trial_overlaps",
    "try_periods",
]

#: the slices' random step factors are drawn from this seed (a check's plan is reproducible)
_FACTOR_SEED = 0x51CE


def try_periods(
    run: RunFn,
    t: np.ndarray,
    sample_shape: tuple[int, ...],
    rule,
    max_period: int,
    kind: str = "richardson",
    copy_cost: float = 0.0,
    max_elements: int | None = None,
    out_per_sample: int = 1,
    positions_differ: bool = True,
) -> int | None:
    """The smallest lattice period whose trial group shows disjoint footprints, if any (and
    only periods whose groups are large enough to be worth it and, with ``max_elements``,
    small enough that one sample of a group's copies (:func:`copies`, ``out_per_sample``
    outputs each) fits in it)."""
    spatial = sample_shape[-min(2, len(sample_shape)) :]
    for p in (2, 3, 4, 5, 6, 8, 12, 16):
        if p > max_period or p >= max(spatial):
            break
        groups = lattice_groups(sample_shape, p)
        trial = max(groups, key=len)
        if not worth_grouping(trial.size, kind, copy_cost):
            break
        if max_elements is not None and copies(trial.size, kind) * out_per_sample > max_elements:
            continue
        if not trial_overlaps(run, t, trial, rule, max_elements, out_per_sample, positions_differ):
            return p
    return None


def trial_overlaps(
    run: RunFn,
    t: np.ndarray,
    positions: np.ndarray,
    rule,
    max_elements: int | None = None,
    out_per_sample: int = 1,
    positions_differ: bool = True,
) -> bool:
    """Whether the footprints of ``positions`` overlap (one +h probe and the code probes);
    a slice of the samples at a time when the copies of every sample (``out_per_sample``
    outputs each) would exceed ``max_elements``."""
    real, _, info = specs_for(t, positions, "complex", rule)  # "complex": +h and codes only
    m = t.shape[0]
    step = m
    if max_elements is not None:
        step = max(1, min(m, max_elements // max(1, len(real) * out_per_sample)))
    for m0 in range(0, m, step):
        args = (slice(m0, min(m, m0 + step)),) if step < m else ()
        bases, ys = run(real, False, *args)
        _, _, _, overlap = decode(
            bases.astype(np.float64, copy=False)[None], ys.astype(np.float64, copy=False)[None],
            1, info["n_bits"], rule.eps, info["g"], positions_differ=positions_differ,
        )  # fmt: skip
        if overlap[0]:
            return True
        del bases, ys  # before the next slice's
    return False


def cell_dtype(n_cells: int) -> np.dtype:
    """The smallest signed integer dtype that holds cell indices ``-1 .. n_cells - 1`` (a map
    is held for as many outputs as the layer has)."""
    for dt in (np.int8, np.int16, np.int32):
        if n_cells <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _points(kind: str) -> tuple[float, ...]:
    """Multiples of ``h`` at which :func:`cell_owners` moves the cells for ``kind``: where the
    groups that read the map take their code probes (``+-2h`` for the real methods, see
    :mod:`checks.engine.grouping`; one point for the complex step, whose groups also check
    that no imaginary part appears without an owner)."""
    return (2.0,) if kind == "complex" else (2.0, -2.0)


def probe_copies(n_cells: int, kind: str) -> int:
    """Copies :func:`cell_owners` takes for ``n_cells`` cells: every cell moved at each point
    of :func:`_points`, and at each the code probes and their complements."""
    return len(_points(kind)) * (1 + 2 * (math.ceil(math.log2(n_cells)) if n_cells > 1 else 0))


def probe_fits(n_cells: int, kind: str, out_per_sample: int, max_elements: int) -> bool:
    """Whether :func:`cell_owners`' copies of one sample fit ``max_elements`` outputs (it cuts
    the samples no finer than one; ``max_elements`` leaves room for one sample's decoding, as
    for a group's copies, :meth:`checks.engine.evaluation.Chunks.max_elements`)."""
    return probe_copies(n_cells, kind) * out_per_sample <= max_elements


def cell_owners(
    run: RunFn,
    t: np.ndarray,
    cells: np.ndarray,
    rule,
    kind: str = "central",
    max_elements: int | None = None,
    out_per_sample: int = 1,
    positions_differ: bool = False,
) -> np.ndarray | None:
    """The cell that moves each output, or ``None`` when some output answers two cells.

    Parameters
    ----------
    run : callable
        A :data:`checks.engine.grouping.RunFn` for ``t``.
    t : ndarray, shape ``(M, S)``
        The tensor (``M`` samples of ``S`` positions; a parameter: ``M = 1``).
    cells : ndarray of int, shape ``(S,)``
        The cell of each position, ``0 .. n - 1``, or ``-1`` for a position in none.
    rule : DtypeRule
    kind : {"complex", "central", "richardson"}
        The method of the groups that will read the map (it sets the probe points).
    max_elements, out_per_sample, positions_differ
        As for :func:`trial_overlaps`.

    Returns
    -------
    owners : ndarray of int (:func:`cell_dtype`), shape ``(M, R)``, or None
        The cell whose positions move each output, ``-1`` where none does. The cells are
        moved whole, every position by its step times a random factor in ``[1/2, 1]``, at
        ``+2h`` and at ``-2h`` for the real methods (their groups' probe points, see
        :mod:`checks.engine.grouping`), at ``+2h`` for the complex step, with code probes
        over the cell index and their complements; ``None`` as soon as an output proves that
        two cells' footprints overlap.
    """
    n = int(cells.max()) + 1
    n_bits = math.ceil(math.log2(n)) if n > 1 else 0
    inside = np.flatnonzero(cells >= 0)
    h = finite_diff.step_sizes(t[:, inside], rule.h_central)
    factors = np.random.default_rng(_FACTOR_SEED).uniform(0.5, 1.0, size=h.shape)
    points = _points(kind)
    moved = [t[:, inside] + s * h * factors for s in points]
    specs = [(inside, v) for v in moved]  # the "stencil": every cell moved together
    for v in moved:  # the code probes, then their complements, at each point
        for on in (1, 0):
            for b in range(n_bits):
                sel = ((cells[inside] >> b) & 1) == on
                specs.append((inside[sel], v[:, sel]))
    m = t.shape[0]
    step = m
    if max_elements is not None:
        step = max(1, min(m, max_elements // (len(specs) * out_per_sample)))
    parts = []
    for m0 in range(0, m, step):
        args = (slice(m0, min(m, m0 + step)),) if step < m else ()
        bases, ys = run(specs, False, *args)
        src, attributed, _, conflict = decode(
            bases.astype(np.float64, copy=False)[None], ys.astype(np.float64, copy=False)[None],
            len(points), n_bits, rule.eps, n, points=tuple(range(len(points))),
            positions_differ=positions_differ,
        )  # fmt: skip
        if conflict[0]:
            return None
        parts.append(np.where(attributed[0], src[0], -1).astype(cell_dtype(n)))
        del bases, ys, src, attributed
    return np.concatenate(parts)


class OwnerMaps:
    """Maps of outputs to cells (:func:`cell_owners`) that groups read their sources off.

    Groups that take one position of each cell of a map share it: a parameter's groups
    along its first axis share the map of its slices; the groups of a lattice that differ
    only in their channel share the map of that lattice offset's cells (a cell: one lattice
    point in every channel). A map is probed when a group first asks for it, and only the
    last one is held (ask in the order of the maps).

    Parameters
    ----------
    probe : callable
        ``probe(map_id) -> owners (M, R) or None``, e.g. :func:`cell_owners` on the cells of
        ``map_id``.
    map_of, cell_of : ndarray of int, shape ``(S,)``
        The map and the cell (within its map) of each position.
    """

    def __init__(
        self, probe: Callable[[int], np.ndarray | None], map_of: np.ndarray, cell_of: np.ndarray
    ) -> None:
        self.probe, self.map_of, self.cell_of = probe, map_of, cell_of
        self.n_cells = int(cell_of.max()) + 1
        self._last: tuple[int, np.ndarray | None] | None = None

    def __call__(self, pos: np.ndarray) -> np.ndarray | None:
        """The map of the group ``pos`` (``None``: none, the group measures its sources)."""
        map_id = int(self.map_of[pos[0]])
        if self._last is None or self._last[0] != map_id:
            self._last = None  # before the next map is probed
            self._last = (map_id, self.probe(map_id))
        return self._last[1]


def pays(n_groups: int, n_cells: int, g: int, kind: str) -> bool:
    """Whether a map of ``n_cells`` cells pays for its probe (:func:`probe_copies`) when
    ``n_groups`` groups of up to ``g`` members read it instead of taking their code probes
    (and, for the complex step, their real ``+h`` copy)."""
    saved = grouping.copies(g, kind) - grouping.copies(g, kind, mapped=True)
    return n_groups * saved > probe_copies(n_cells, kind)
