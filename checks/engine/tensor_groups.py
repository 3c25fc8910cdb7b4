"""Which grouping a tensor of a check takes, and its evaluation in groups.

A tensor packed along the batch axis tries lattice periods, a parameter groups along its
first axis (:mod:`checks.engine.trials`); the answer is kept in the run's context, where the
coverage plan may ask first (:func:`trial_groups`) and the evaluation reuses it
(:func:`grouped`). Groups that share a map of outputs to cells read their sources off it
where enough of them share it to pay for its probe (:func:`_owner_maps`).
"""

from __future__ import annotations

import math

import numpy as np

from checks.engine import grouping, trials
from checks.engine.evaluation import (
    CHUNK_ELEMENTS,
    COMPLEX_FIELDS,
    FD_FIELDS,
    Chunks,
    Ctx,
    Packed,
    element_call_cost,
    element_run,
    scratch_bytes,
)

__all__ = ["affordable", "grouped", "map_sharing", "trial_groups"]

_MIN_GROUPED = 8


def _grouping_key(
    ctx: Ctx,
    name: str,
    run: grouping.RunFn,
    tf: np.ndarray,
    shape: tuple[int, ...],
    kind: str,
    r_out: int,
    how: str,
    copy_cost: float,
    max_elements: int,
    n_groups: int = 0,
) -> str:
    """The grouping of ``name`` that passed its trial for ``kind`` ("" when none did), tried
    once per run and kept in ``ctx.groupings`` (the coverage plan may ask first, see
    :func:`trial_groups`; the evaluation then reuses the answer). ``n_groups``: how many
    groups along axis 0 the evaluation asking will take (0: not known)."""
    key = ctx.groupings.get(f"{name}/{kind}")
    if key is not None:
        return key
    key = ""
    if how == "lattice" and len(shape) >= 1:
        p = trials.try_periods(
            run, tf, tuple(shape), ctx.rule, max(shape[-2:]), kind, copy_cost,
            max_elements, r_out,
        )  # fmt: skip
        key = f"lattice period {p}" if p else ""
    elif how == "axis0" and len(shape) >= 1:
        key = _axis0_key(ctx, name, run, tf, shape, kind, r_out, copy_cost, max_elements, n_groups)
    ctx.groupings[f"{name}/{kind}"] = key
    return key


_AXIS0 = "grouped along axis 0"
#: no map was probed as the grouping's trial (see ``Ctx.owners``)
_UNPROBED = object()


def _axis0_key(
    ctx: Ctx,
    name: str,
    run: grouping.RunFn,
    tf: np.ndarray,
    shape: tuple[int, ...],
    kind: str,
    r_out: int,
    copy_cost: float,
    max_elements: int,
    n_groups: int = 0,
) -> str:
    """Grouping a parameter along its first axis, where a trial shows no overlap.

    The trial is a group of elements; or, where ``n_groups`` groups will read it and pay for
    it, the probe of the map of its slices (:func:`checks.engine.trials.cell_owners`, kept in
    ``ctx.owners`` for them), which proves more; or none for a tensor that is one group (its
    own code probes verify it, and a trial would only add to them).
    """
    n0 = shape[0]
    if (
        n_groups
        and trials.pays(n_groups, n0, n0, kind)
        and trials.probe_fits(n0, kind, r_out, max_elements)
    ):
        owners = trials.cell_owners(run, tf, np.arange(tf.shape[1]) // (tf.shape[1] // n0),
                                    ctx.rule, kind)  # fmt: skip
        ctx.owners[f"{name}/{kind}"] = owners  # None too: not probed again
        if owners is not None:
            return _AXIS0
    if (
        grouping.worth_grouping(n0, kind, copy_cost)
        and grouping.copies(n0, kind) * r_out <= max_elements
    ):
        if tf.shape[1] == n0:  # one group
            return _AXIS0
        trial = grouping.axis0_groups(shape)[0]
        overlap = trials.trial_overlaps(
            run, tf, trial, ctx.rule, max_elements, r_out, positions_differ=False
        )
        return "" if overlap else _AXIS0
    return ""


def _groups_of(key: str, shape: tuple[int, ...]) -> list[np.ndarray]:
    """The groups of a grouping key of :func:`_grouping_key` (none for "")."""
    if not key:
        return []
    if key.startswith("lattice"):
        return grouping.lattice_groups(tuple(shape), int(key.rsplit(" ", 1)[1]))
    return grouping.axis0_groups(tuple(shape))


def grouped(
    ctx: Ctx,
    name: str,
    run: grouping.RunFn,
    tf: np.ndarray,
    shape: tuple[int, ...],
    cols: np.ndarray,
    kind: str,
    dym: np.ndarray,
    out: dict[str, np.ndarray],
    how: str,
    copy_cost: float,
    max_elements: int = CHUNK_ELEMENTS,
    where: np.ndarray | None = None,
    decode_elements: int = 0,
    use_owners: bool = True,
) -> np.ndarray:
    """Evaluate ``cols`` in groups with disjoint footprints where a trial allows; fill ``out``
    (shape (M, S), or (M, S') at the columns ``where`` of the positions) and return the
    positions left for one-by-one evaluation. ``copy_cost``: input elements one copy pushes
    through forward (plus call overhead); ``max_elements``: outputs held at once (a grouping
    whose copies of one sample exceed it is not tried); ``decode_elements``: float64 elements
    the decoding's temporaries may take besides them. A group of which ``cols`` holds too
    few members to be worth its code probes (a sample scattered over many groups, the
    suspects of a localization) is left to the one-by-one evaluation. ``use_owners``: read
    the sources off the map of a grouping along axis 0 that has one (else measure them)."""
    if cols.size < _MIN_GROUPED:
        return cols
    r_out = dym.shape[1]
    n_groups = 0
    if how == "axis0" and use_owners:  # groups holding some of cols
        n_groups = np.unique(cols % (tf.shape[1] // shape[0])).size
    key = _grouping_key(
        ctx, name, run, tf, shape, kind, r_out, how, copy_cost, max_elements, n_groups
    )
    # the map its trial probed (None: the probe found the slices overlap), if it did
    probed = ctx.owners.pop(f"{name}/{kind}", _UNPROBED)
    if not key:
        return cols
    wanted = np.zeros(tf.shape[1], dtype=bool)
    wanted[cols] = True
    groups = [g[wanted[g]] for g in _groups_of(key, shape)]
    groups = [g for g in groups if g.size]
    owners = None
    if use_owners:
        owners = _owner_maps(ctx, name, key, run, tf, shape, kind, groups, max_elements, probed)
    mapped = owners is not None
    if owners is not None:  # the groups of a map side by side
        map_of = owners.map_of
        groups.sort(key=lambda g: int(map_of[g[0]]))
    groups = [g for g in groups if grouping.worth_grouping(g.size, kind, copy_cost, mapped)]
    # a grouping the coverage plan found with less of the scratch held than this
    # evaluation holds may not fit here: then one by one (the plan costed it so)
    largest = max((g.size for g in groups), default=0)
    # a packed tensor's maps are probed as its groups ask, and a map that does not pay or
    # conflicts leaves its groups their code probes: their copies must fit too
    known = mapped and name not in ctx.packed
    if not groups or not affordable(largest, kind, r_out, max_elements, known):
        return cols
    if mapped:
        ctx.mapped.add(name)
    _, failed = grouping.evaluate_groups(
        run, tf, groups, kind, ctx.rule, dym, ctx.ybar, max_elements, ctx.dy_random,
        out=out, where=where,
        positions_differ=how == "lattice",  # packed copies of x: other batch positions
        decode_elements=decode_elements, owners=owners,
    )  # fmt: skip
    done = np.zeros(tf.shape[1], dtype=bool)
    for g in groups:
        done[g] = True
    done[failed] = False
    return np.flatnonzero(wanted & ~done)


def _owner_maps(
    ctx: Ctx,
    name: str,
    key: str,
    run: grouping.RunFn,
    tf: np.ndarray,
    shape: tuple[int, ...],
    kind: str,
    groups: list[np.ndarray],
    max_elements: int,
    probed: object = _UNPROBED,
) -> trials.OwnerMaps | None:
    """The maps of outputs to cells that ``groups`` (of the grouping ``key``) can read their
    sources off (:mod:`checks.engine.trials`): a parameter's slices, or a lattice offset's
    points across channels, each probed where enough of the groups share it to pay for its
    probe (:func:`checks.engine.trials.pays`); ``None`` where no map does. ``probed``: a
    parameter's map probed as its grouping's trial (an array, or ``None`` where that probe
    found its slices overlap; ``_UNPROBED`` where it was not the trial)."""
    s, r_out = tf.shape[1], ctx.y0.size // tf.shape[0]
    if key == _AXIS0:
        cell_of = np.arange(s) // (s // shape[0])
        map_of = np.zeros(s, dtype=np.intp)
    elif key.startswith("lattice") and len(shape) >= 3:  # channels: maps shared
        p = int(key.rsplit(" ", 1)[1])
        idx = np.indices(shape).reshape(len(shape), -1)
        map_of = (idx[-2] % p) * p + idx[-1] % p
        cell_of = (idx[-2] // p) * -(-shape[-1] // p) + idx[-1] // p
    else:
        return None
    uses = np.bincount(
        [int(map_of[g[0]]) for g in groups if g.size], minlength=int(map_of.max()) + 1
    )
    largest = max((g.size for g in groups), default=0)
    cells_in = {int(m): int(cell_of[map_of == m].max()) + 1 for m in np.flatnonzero(uses)}
    paying = {
        m for m, n in cells_in.items()
        if trials.pays(int(uses[m]), n, largest, kind)
        and trials.probe_fits(n, kind, r_out, max_elements)
    }  # fmt: skip
    if not paying:
        return None
    if name not in ctx.packed:  # one call per copy, on every sample: probed now (unless its
        # trial was the probe), and only if its copies fit (a failed map's groups would take
        # code probes the caller did not count: no map then)
        if probed is not _UNPROBED:
            owners = probed if isinstance(probed, np.ndarray) else None
        elif trials.probe_fits(int(cell_of.max()) + 1, kind, r_out, max_elements):
            owners = trials.cell_owners(run, tf, cell_of, ctx.rule, kind)
        else:
            owners = None
        return None if owners is None else trials.OwnerMaps(lambda _: owners, map_of, cell_of)

    def probe(map_id: int) -> np.ndarray | None:
        if map_id not in paying:
            return None
        cells = np.where(map_of == map_id, cell_of, -1)
        return trials.cell_owners(run, tf, cells, ctx.rule, kind, max_elements, r_out, True)

    return trials.OwnerMaps(probe, map_of, cell_of)


def trial_groups(ctx: Ctx, name: str, kind: str) -> tuple[list[np.ndarray], bool]:
    """The groups of disjoint footprints in which ``kind``'s evaluation of ``name`` would
    take its elements -- positions within a sample when ``name`` is packed along the batch
    axis (every group then spans every sample), flat indices otherwise -- and whether their
    copies fit the scratch of a check of every element.

    The trial runs here (forward calls, counted) and its answer is kept for the evaluation,
    which does not run it again. It is tried with the scratch of a small sample (no result
    fields held): a check of every element holds more, and :func:`grouped` evaluates one
    by one what the scratch it has cannot decode (the second value says whether that will
    be the case). No groups: no grouping passed its trial.
    """
    t = ctx.target.value(name)
    if t.size < _MIN_GROUPED:
        return [], False
    fields = COMPLEX_FIELDS if kind == "complex" else FD_FIELDS
    if name in ctx.packed:
        pk = Packed(ctx, name, np.zeros(t.shape, dtype=bool), kind, compact=True, refining=False)
        isz = np.dtype(ctx.rule.complex_dtype if kind == "complex" else t.dtype).itemsize
        r_out, shape = pk.r_out, tuple(pk.xb.shape[1:])
        whole = Chunks(scratch_bytes(ctx, name, 8 * t.size * len(fields)), pk.s, r_out, isz, kind)
        key = _grouping_key(ctx, name, pk.run, pk.xf, shape, kind, r_out, "lattice",
                            pk.xf.size, pk.chunks.max_elements())  # fmt: skip
    else:
        osz = 16 if kind == "complex" else 8
        r_out, shape = math.prod(ctx.y_shape), tuple(t.shape)
        whole = Chunks(scratch_bytes(ctx, name, 8 * t.size * len(fields)), 0, r_out, osz, kind)
        sample = Chunks(scratch_bytes(ctx, name), 0, r_out, osz, kind)
        run = element_run(ctx, name)
        key = _grouping_key(ctx, name, run, t.reshape(1, -1), shape, kind, r_out, "axis0",
                            element_call_cost(ctx), sample.max_elements())  # fmt: skip
    groups = _groups_of(key, shape)
    largest = max((g.size for g in groups), default=0)
    return groups, bool(groups) and affordable(largest, kind, r_out, whole.max_elements())


def map_sharing(ctx: Ctx, name: str, kind: str) -> int:
    """How many groups of ``name`` share each map of outputs to cells in a check of every
    element, under the grouping its trial for ``kind`` found, where the map pays for its probe
    (:func:`_owner_maps`; 0: its groups measure their sources). Whether a probe will fit the
    scratch, or find its cells disjoint, is not known here: the plan is optimistic there."""
    key = ctx.groupings.get(f"{name}/{kind}", "")
    t = ctx.target.value(name)
    shape = t.shape
    if name in ctx.packed:  # a sample's shape
        shape = shape[: ctx.batch_axis] + shape[ctx.batch_axis + 1 :]
    if key == _AXIS0:
        share, cells = math.prod(t.shape[1:]), t.shape[0]
    elif key.startswith("lattice") and len(shape) >= 3:
        p = int(key.rsplit(" ", 1)[1])
        share = math.prod(shape[:-2])
        cells = -(-shape[-2] // p) * -(-shape[-1] // p)
    else:
        return 0
    return share if trials.pays(share, cells, cells, kind) else 0


def affordable(g: int, kind: str, r_out: int, max_elements: int, mapped: bool = False) -> bool:
    """Whether the copies of one sample of a group of ``g`` fit ``max_elements`` outputs."""
    return grouping.copies(g, kind, mapped) * r_out <= max_elements
