"""Issue 3, point 4: perturbations packed along batch_axis when a probe shows the samples are
independent; one call per probe otherwise (a batch-norm-like layer)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cnn_ref
from checks import GradientMismatchError, check_layer
from checks.engine import finite_diff, grouping, tolerances, trials
from property_tests.meta_tests._tiny_layers import (
    BatchNormLike,
    Planted,
    PositionRounded,
    conv,
)


def test_an_independent_layer_is_packed_and_needs_few_calls():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 6, 6))
    rep = check_layer(conv(rng), x, coverage="full")
    assert rep.batching.startswith("x: packed")
    # one call per element would be >= x.size calls for x alone
    assert rep.n_evals < x.size


def test_batch_norm_like_layer_falls_back_and_is_still_checked():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3))
    rep = check_layer(BatchNormLike(rng.standard_normal(3)), x)
    assert "one call per probe" in rep.batching
    assert rep.tensor("x").n_checked == x.size
    with pytest.raises(GradientMismatchError):
        check_layer(Planted(BatchNormLike(rng.standard_normal(3)), "x", (2, 1), 1e-5), x)


class _Wrong(BatchNormLike):
    """Batch-dependent forward with a backward that treats samples as independent: the
    packed evaluation would agree with it, so it is caught only if the probe falls back."""

    def backward(self, dy):
        self.grads["g"] = (dy * self.xc).sum(axis=0)
        return dy * self.params["g"]


def test_the_probe_protects_against_batch_dependence():
    rng = np.random.default_rng(2)
    with pytest.raises(GradientMismatchError):
        check_layer(_Wrong(rng.standard_normal(3)), rng.standard_normal((4, 3)))


class _BatchLast:
    """Batch on axis 1: y[f, n] = tanh(W @ x)[f, n]."""

    def __init__(self, W):
        self.params, self.grads = {"W": W}, {}

    def forward(self, x):
        self.x = x
        self.y = np.tanh(self.params["W"] @ x)
        return self.y

    def backward(self, dy):
        du = dy * (1 - self.y**2)
        self.grads["W"] = du @ self.x.T
        return self.params["W"].T @ du


def test_batch_axis_other_than_zero():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5))
    rep = check_layer(_BatchLast(rng.standard_normal((3, 4))), x, batch_axis=1)
    assert rep.batching.startswith("x: packed along batch_axis=1")
    with pytest.raises(ValueError, match="batch_axis=2"):
        check_layer(_BatchLast(rng.standard_normal((3, 4))), x, batch_axis=2)


class _FixedBatch:
    """Elementwise and independent, but refuses any batch size but 4 (so it is not packed)."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        if x.shape[0] != 4:
            raise ValueError(f"batch size must be 4, got {x.shape[0]}")
        self.x = x
        return np.sin(x) * 2.0

    def backward(self, dy):
        return 2.0 * dy * np.cos(self.x)


@pytest.mark.parametrize("method", ["richardson", "complex"])
def test_packed_and_unpacked_evaluations_agree(method):
    x = np.random.default_rng(4).standard_normal((4, 3))
    from checks import check_vjp

    packed = check_vjp(
        lambda a: np.sin(a) * 2.0, lambda dy, a: (2.0 * dy * np.cos(a),), x, method=method
    )
    single = check_layer(_FixedBatch(), x, method=method)
    assert "packed" in packed.batching and "one call per probe" in single.batching
    np.testing.assert_allclose(packed.tensors[0].numerical, single.tensors[0].numerical, rtol=1e-9)


def test_grouped_perturbations_agree_with_one_by_one(monkeypatch):
    """Elements with disjoint output footprints are perturbed together (checks.engine.grouping);
    the numbers must be those of perturbing them one at a time."""
    import checks.engine.tensor_groups as tensor_groups
    from checks.engine import grouping

    monkeypatch.setattr(grouping, "GROUP_OVERHEAD", 0.0)  # group even where it does not pay
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 9, 9))
    layer = conv(rng, 2, 8, 3)  # 8 output maps: K's elements group along axis 0
    for method in ("complex", "richardson"):
        grouped = check_layer(layer, x, method=method, coverage="full")
        assert "x: lattice period 3" in grouped.batching
        assert "K: grouped along axis 0" in grouped.batching
        with monkeypatch.context() as m:
            m.setattr(tensor_groups, "_MIN_GROUPED", 10**9)
            single = check_layer(layer, x, method=method, coverage="full")
        assert "disjoint-footprint" not in single.batching
        for tg, ts in zip(grouped.tensors, single.tensors, strict=True):
            np.testing.assert_allclose(tg.numerical, ts.numerical, rtol=1e-9, atol=1e-12)


class _Coupled:
    """y = x * sum(x) over each sample: every element moves every output (no disjoint
    groups exist), so grouping must detect the overlap and fall back."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.x = x
        self.s = x.sum(axis=(1, 2, 3), keepdims=True)
        return x * self.s

    def backward(self, dy):
        return dy * self.s + (dy * self.x).sum(axis=(1, 2, 3), keepdims=True)


def test_overlapping_footprints_fall_back_and_still_catch_errors():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 6, 6))
    rep = check_layer(_Coupled(), x)
    assert "disjoint-footprint" not in rep.batching
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(_Coupled(), "x", (1, 0, 3, 2), 1e-6), x)
    assert ei.value.report.tensor("x").worst_index == (1, 0, 3, 2)


def test_a_planted_error_is_caught_inside_a_group():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 10, 10))
    for tensor, idx in (("x", (1, 2, 4, 7)), ("K", (3, 1, 2, 0))):
        with pytest.raises(GradientMismatchError) as ei:
            check_layer(Planted(conv(np.random.default_rng(8), 3, 8, 3), tensor, idx, 1e-6), x)
        rep = ei.value.report
        assert "disjoint-footprint" in rep.batching
        assert rep.tensor(tensor).worst_index == idx and rep.tensor(tensor).n_mismatched == 1


def _packed_run(layer, x):
    """A :data:`checks.engine.grouping.RunFn` over ``layer.forward`` and ``x`` flattened to
    ``(samples, positions)``: all specs are evaluated in one call, with an unperturbed copy."""
    m = x.shape[0]
    xf = x.reshape(m, -1)

    def run(specs, cplx):
        assert not cplx
        big = np.repeat(xf[None], 1 + len(specs), axis=0)
        for i, (pos, vals) in enumerate(specs):
            big[1 + i][:, pos] = vals
        y = np.asarray(layer.forward(big.reshape(-1, *x.shape[1:])), dtype=np.float64)
        y = y.reshape(1 + len(specs), m, -1)
        return np.broadcast_to(y[0], y[1:].shape), y[1:]

    return run, xf


def _grouped_and_single(layer, x, period, step_div, seed):
    """Richardson fields of ``x``'s lattice groups of ``period`` with the table's step divided
    by ``step_div``, and of every element that did not fall back evaluated alone at the same
    step. Returns ``(grouped, failed positions, single, positions evaluated both ways)``."""
    run, xf = _packed_run(layer, x)
    rule = tolerances.rule_for(x.dtype)
    rule = dataclasses.replace(rule, h_central=rule.h_central / step_div)
    y0 = np.asarray(layer.forward(x), dtype=np.float64).reshape(x.shape[0], -1)
    dy = np.random.default_rng(seed).standard_normal(y0.shape)
    args = ("richardson", rule, dy, float(np.mean(np.abs(y0))), 2**22, True)
    groups = grouping.lattice_groups(x.shape[1:], period)
    grouped, failed = grouping.evaluate_groups(run, xf, groups, *args)
    kept = np.setdiff1d(np.concatenate(groups), failed)
    single, s_failed = grouping.evaluate_groups(run, xf, [np.array([p]) for p in kept], *args)
    return grouped, failed, single, np.setdiff1d(kept, s_failed)


def _assert_same_slopes(grouped, single, kept):
    """The one-sided slopes (steps h and 2h, both sides) of every element evaluated in a group
    are those of perturbing it alone, up to the rounding noise the checker gives them: a
    member credited with another member's change is off by far more."""
    for f in ("right", "left", "right2", "left2"):
        diff = np.abs(grouped[f][:, kept] - single[f][:, kept])
        assert np.all(diff <= grouped["onesided_noise"][:, kept]), f


@pytest.mark.parametrize("step_div", [1, 4, 16, 64])
def test_relu_conv_groups_do_not_fall_back(step_div):
    """A ReLU output that moves only at -h or +-2h (its pre-activation crosses 0 on one side,
    or between h and 2h) has its source read at +-2h instead of making its group a conflict.
    With code probes at +h only, most groups of this float32 conv fell back, at the table's
    step and at the refinement steps h/4 .. h/64."""
    rng = np.random.default_rng(0)
    layer = cnn_ref.Conv2D(3, 8, 3, activation="relu", seed=0, dtype=np.float32)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    grouped, failed, single, kept = _grouped_and_single(layer, x, 3, step_div, 0)
    assert failed.size <= 0.1 * x[0].size
    assert kept.size >= 0.9 * x[0].size
    _assert_same_slopes(grouped, single, kept)


def _rounded_check(nudge, planted=None):
    rng = np.random.default_rng(0)
    layer = PositionRounded(conv(rng, 3, 8, 3, np.float32), nudge)
    if planted is not None:
        layer = Planted(layer, "x", planted, 1e-2)
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    return check_layer(layer, x, coverage="full", precision="native")


def test_grouping_survives_position_dependent_rounding():
    """A BLAS-backed layer rounds the same sample differently at another batch position (on
    one OpenBLAS thread, columns 0-319 of a wide sgemm on one CPU; the thread count on any).
    Simulated deterministically by :class:`PositionRounded` (one ulp of the typical
    pre-activation at odd batch positions): the verdict, the lattice grouping of x and the
    number of forward calls are those of the same layer without the nudge. With a threshold
    of 4 ulps of ``|y_j|`` alone, the trial saw every copy's unperturbed outputs move, x was
    not grouped and the check took 1583 forward calls instead of 283."""
    plain, nudged = _rounded_check(False), _rounded_check(True)
    for rep in (plain, nudged):
        assert "x: lattice period 3" in rep.batching
    assert nudged.n_evals <= 1.1 * plain.n_evals
    assert [t.n_checked for t in nudged.tensors] == [t.n_checked for t in plain.tensors]
    with pytest.raises(GradientMismatchError) as ei:
        _rounded_check(True, planted=(1, 2, 5, 7))
    assert ei.value.report.tensor("x").worst_index == (1, 2, 5, 7)


@pytest.mark.parametrize("step_div", [1, 16])
def test_groups_do_not_fall_back_under_position_dependent_rounding(step_div):
    """The same at the level of the groups, at the table's step and a refinement step: the
    perturbed copies sit at other batch positions than the unperturbed one."""
    rng = np.random.default_rng(0)
    layer = PositionRounded(conv(rng, 3, 8, 3, np.float32))
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    _, failed, _, kept = _grouped_and_single(layer, x, 3, step_div, 0)
    assert failed.size <= 0.1 * x[0].size
    assert kept.size >= 0.9 * x[0].size


@pytest.mark.parametrize("seed", range(4))
def test_members_sharing_a_max_pool_window_are_not_confused(seed):
    """With period 3 the inputs of a 3x3 conv share 2x2 max-pool windows, whose max can change
    hands between two members within the stencil. Such a group must fall back, or each
    member's slopes must be its own: with code probes at +h only, a max that changed hands at
    -2h was credited to the member read at +h."""
    rng = np.random.default_rng(seed)
    conv = cnn_ref.Conv2D(3, 4, 3, activation="relu", seed=seed, dtype=np.float32)
    layer = cnn_ref.Sequential([conv, cnn_ref.MaxPool2D(2)])
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    for step_div in (1, 4):
        grouped, _, single, kept = _grouped_and_single(layer, x, 3, step_div, seed)
        assert kept.size
        _assert_same_slopes(grouped, single, kept)


@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_groups_with_overlapping_footprints_fall_back(activation):
    """Period 2 < kernel size 3: neighbouring members of every group move shared outputs, so
    the trial reports the overlap and every group falls back to one by one (period 3, whose
    footprints are disjoint, passes the trial)."""
    rng = np.random.default_rng(9)
    layer = cnn_ref.Conv2D(3, 4, 3, activation=activation, seed=9, dtype=np.float32)
    x = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    run, xf = _packed_run(layer, x)
    rule = tolerances.rule_for(x.dtype)
    for period, overlap in ((2, True), (3, False)):
        groups = grouping.lattice_groups(x.shape[1:], period)
        assert trials.trial_overlaps(run, xf, max(groups, key=len), rule) is overlap
    grouped, failed, _, kept = _grouped_and_single(layer, x, 2, 1, 9)
    np.testing.assert_array_equal(np.sort(failed), np.arange(xf.shape[1]))
    assert kept.size == 0 and np.all(np.isnan(grouped["value"]))


class _Offsets:
    """``y = x - x0`` for a single sample ``x0`` of shape ``(1, n)`` (disjoint footprints),
    applied to every copy of a packed batch."""

    def __init__(self, x0):
        self.x0 = x0

    def offsets(self, x):
        return (x.reshape(-1, *self.x0.shape) - self.x0).reshape(x.shape)


class _MovesAtMinusHOnly(_Offsets):
    """Plus one output that is 1 while ``x[k]`` lies in ``(x0 - 1.5 h, x0 - 0.5 h)``: it
    moves at the stencil point ``-h`` and at no other, so no probe can read its source."""

    def __init__(self, x0, k, h):
        super().__init__(x0)
        self.k, self.h = k, h

    def forward(self, x):
        d = self.offsets(x)
        bump = (d[:, self.k] > -1.5 * self.h) & (d[:, self.k] < -0.5 * self.h)
        return np.concatenate([d, bump[:, None].astype(d.dtype)], axis=1)


class _SharedMax(_Offsets):
    """Plus one output ``max(x[a] - x0[a], x0[b] - x[b])``, moved by ``a`` when the whole
    group steps up and by ``b`` when it steps down: each side alone shows a single source."""

    def __init__(self, x0, a, b):
        super().__init__(x0)
        self.a, self.b = a, b

    def forward(self, x):
        d = self.offsets(x)
        shared = np.maximum(d[:, self.a], -d[:, self.b])
        return np.concatenate([d, shared[:, None]], axis=1)


def _failed_positions(layer, x0, period):
    """Positions of ``x0``'s lattice groups of ``period`` that fall back, and the groups."""
    run, xf = _packed_run(layer, x0)
    rule = tolerances.rule_for(x0.dtype)
    y0 = np.asarray(layer.forward(x0), dtype=np.float64)
    dy = np.random.default_rng(11).standard_normal(y0.shape)
    groups = grouping.lattice_groups(x0.shape[1:], period)
    args = ("richardson", rule, dy, float(np.mean(np.abs(y0))), 2**22, True)
    _, failed = grouping.evaluate_groups(run, xf, groups, *args)
    return set(failed.tolist()), groups


def test_an_output_moving_where_no_probe_reads_it_sends_its_group_to_the_fallback():
    x0 = np.random.default_rng(10).standard_normal((1, 12))
    k = 4
    h = float(finite_diff.step_sizes(x0[0, k], tolerances.rule_for(x0.dtype).h_central))
    failed, groups = _failed_positions(_MovesAtMinusHOnly(x0, k, h), x0, 3)
    assert failed == {int(p) for g in groups if k in g for p in g}


def test_sources_read_differently_at_plus_and_minus_2h_are_a_conflict():
    """Both members of the shared output are in one group; the readings at +2h and -2h each
    pass their own checks, and only their disagreement shows the overlap (probes at +h only
    credited the change at -h and -2h to ``a``)."""
    x0 = np.random.default_rng(12).standard_normal((1, 12))
    a, b = 0, 6
    failed, groups = _failed_positions(_SharedMax(x0, a, b), x0, 3)
    assert failed == {int(p) for g in groups if a in g for p in g}
    assert b in failed


def test_check_vjp_packs_x_alone_beside_weights_of_other_sizes():
    """f(x, W, b) with W and b of other sizes along axis 0: x carries the batch and is
    packed (every input used to need the same size there, so nothing was); a W of x's size
    is ambiguous (a batch, or a weight?) and nothing is packed."""
    from checks import check_vjp

    def f(x, W, b):
        return np.tanh(x @ W.T + b)

    def vjp(dy, x, W, b):
        g = dy * (1 - np.tanh(x @ W.T + b) ** 2)
        return g @ W, g.T @ x, g.sum(axis=0)

    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4))
    rep = check_vjp(f, vjp, x, rng.standard_normal((3, 4)), rng.standard_normal(3))
    assert rep.batching.startswith("inputs[0]: packed")
    one_by_one = check_vjp(f, vjp, x, rng.standard_normal((6, 4)), rng.standard_normal(6))
    assert "packed" not in one_by_one.batching


class _OneLeak:
    """A valid 3 x 3 conv plus ``x[:, 0, 0, 0]`` leaking into output ``(5, 5)`` of map 0,
    which ``x[:, 0, 6, 6]`` moves too: at lattice period 3 exactly one group (channel 0,
    offset (0, 0)) has overlapping footprints."""

    def __init__(self, layer):
        self.layer = layer

    def forward(self, x):
        y = np.array(self.layer.forward(x), copy=True)
        y[:, 0, 5, 5] += 0.5 * x[:, 0, 0, 0] ** 2
        return y


def test_groups_decoded_together_give_what_each_gives_decoded_alone(monkeypatch):
    """A batch's groups are decoded together (one group's arrays are small, numpy's per-call
    cost dominated); nothing of one group may leak into another's: the fields and the groups
    sent to the fallback are those of decoding one group at a time, from the same outputs."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 2, 9, 9))
    run, xf = _packed_run(_OneLeak(conv(rng, 2, 3, 3)), x)
    dy = rng.standard_normal((2, 3 * 7 * 7))
    args = ("richardson", tolerances.rule_for(x.dtype), dy, 1.0, 2**22, True)
    groups = grouping.lattice_groups(x.shape[1:], 3)
    together, failed = grouping.evaluate_groups(run, xf, groups, *args)
    with monkeypatch.context() as m:
        m.setattr(grouping, "_DECODE_TEMPS", 2**40)  # room for one group's decoding only
        alone, failed_alone = grouping.evaluate_groups(run, xf, groups, *args)
    leaky = next(g for g in groups if 0 in g)
    assert sorted(failed.tolist()) == sorted(failed_alone.tolist()) == sorted(leaky.tolist())
    for f in together:
        np.testing.assert_array_equal(together[f], alone[f], err_msg=f)
    assert np.isfinite(together["value"]).sum() == xf.size - 2 * leaky.size
