"""Turn a pytest-benchmark JSON file into ``benchmarks/RESULTS.md`` and a PNG plot.

Usage::

    python -m benchmarks.report .benchmarks/last.json [--md PATH] [--png PATH]

Every number comes from the one JSON file, i.e. from one run: the GEMM peak of each dtype
(``bench_gemm``), the conv rows of ``cnn_ref`` and of the peers (``bench_conv``,
``bench_peers``), the checker's cost (``bench_checker``) and the PyTorch door's cost and
planted-bug counts (``bench_torch_front``). Throughput uses the median
round. "x PyTorch" is the row's throughput divided by PyTorch's for the same shape, dtype
and op (above 1: faster than PyTorch).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import SHAPES

HERE = Path(__file__).resolve().parent
DEFAULT_MD = HERE / "RESULTS.md"
DEFAULT_PNG = HERE / "results.png"

SHAPE_ORDER = "ABCDSP"
SHAPE_MEANING = {
    "A": "a first layer on small colour images (LeNet/CIFAR-like, 5 x 5)",
    "B": "a mid-network 3 x 3 layer (VGG-like, 64 maps)",
    "C": "a wide 3 x 3 layer (128 maps), where GEMM dominates",
    "D": "one MNIST image through LeNet's first layer (call overhead)",
    "S": "a 3 x 3 layer with stride 2",
    "P": "a 3 x 3 layer with zero padding 1",
}
OP_ORDER = ("forward", "backward", "forward+backward")
IMPL_ORDER = ("fast", "literal", "torch", "mygrad", "scipy")
IMPL_LABEL = {
    "fast": "cnn_ref fast",
    "literal": "cnn_ref literal",
    "torch": "PyTorch conv2d",
    "mygrad": "mygrad conv_nd",
    "scipy": "scipy.signal loops",
}


@dataclass(frozen=True)
class ConvRow:
    shape: str
    shape_label: str
    dtype: str
    op: str
    impl: str
    convention: str
    median: float
    gflops: float
    gflops_best: float | None
    pct_peak: float | None
    x_torch: float | None


@dataclass(frozen=True)
class CheckerRow:
    case: str
    case_label: str
    tool: str
    mode: str
    median: float
    n_evals: int | None
    x_gradcheck_slow: float | None  # gradcheck slow time / this row's time (speed-up)
    x_gradcheck_fast: float | None  # gradcheck fast time / this row's time (below 1: slower)


@dataclass(frozen=True)
class MemoryRow:
    shape_label: str
    dtype: str
    convention: str
    peak_bytes: int
    input_bytes: int
    io_bytes: int

    @property
    def ratio(self) -> float:
        """Peak live memory (inputs already held + peak new allocations) / (in + out + grads)."""
        return (self.input_bytes + self.peak_bytes) / self.io_bytes


@dataclass(frozen=True)
class BugRow:
    """Planted single-element bugs in dx, and what each checker said (counts of ``planted``;
    ``size`` 0: the correct Function, where a catch is a false alarm)."""

    case: str
    case_label: str
    dtype: str
    size: float
    planted: int
    fast_caught: int | None  # gradcheck fast mode (None: not run)
    ours_caught: int
    ours_located: int


def load(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    if "benchmarks" not in data:
        raise ValueError(f"{path} has no 'benchmarks' list: not a pytest-benchmark JSON file")
    return data


def _gflops(bench: dict[str, Any]) -> float | None:
    extra = bench.get("extra_info", {})
    if "gflops" in extra:
        return float(extra["gflops"])
    median = bench.get("stats", {}).get("median")
    if extra.get("flops") and median:
        return float(extra["flops"]) / float(median) / 1e9
    return None


def gemm_peaks(benches: Iterable[dict[str, Any]]) -> dict[str, float]:
    """GEMM GFLOP/s per dtype from the best round: the machine's ceiling.

    The best round, not the median, because on a shared machine a busy moment only ever
    lowers a GEMM measurement; the conv rows keep their medians, so "% of peak" errs low.
    """
    peaks: dict[str, float] = {}
    for b in benches:
        extra = b.get("extra_info", {})
        g = extra.get("gflops_best") or _gflops(b)
        if extra.get("impl") == "gemm" and g is not None:
            peaks[extra["dtype"]] = max(float(g), peaks.get(extra["dtype"], 0.0))
    return peaks


def _order(value: str, order: Sequence[str]) -> int:
    return order.index(value) if value in order else len(order)


def conv_rows(benches: Sequence[dict[str, Any]]) -> list[ConvRow]:
    peaks = gemm_peaks(benches)
    conv = [
        b
        for b in benches
        if b.get("extra_info", {}).get("op") in OP_ORDER and _gflops(b) is not None
    ]
    torch: dict[tuple[str, str, str], float] = {}
    for b in conv:
        e = b["extra_info"]
        if e["impl"] == "torch":
            torch[(e["shape"], e["dtype"], e["op"])] = _gflops(b) or math.nan
    rows = []
    for b in conv:
        e = b["extra_info"]
        g = _gflops(b)
        assert g is not None
        peak = peaks.get(e["dtype"])
        t = torch.get((e["shape"], e["dtype"], e["op"]))
        rows.append(
            ConvRow(
                shape=e["shape"],
                shape_label=e.get("shape_label", e["shape"]),
                dtype=e["dtype"],
                op=e["op"],
                impl=e["impl"],
                convention=e.get("convention", ""),
                median=float(b["stats"]["median"]),
                gflops=g,
                gflops_best=e.get("gflops_best"),
                pct_peak=100.0 * g / peak if peak else None,
                x_torch=g / t if t else None,
            )
        )
    rows.sort(
        key=lambda r: (
            _order(r.shape, SHAPE_ORDER),
            r.shape,
            r.dtype,
            _order(r.op, OP_ORDER),
            _order(r.impl, IMPL_ORDER),
            r.convention,
        )
    )
    return rows


def checker_rows(benches: Sequence[dict[str, Any]]) -> list[CheckerRow]:
    chk = [b for b in benches if b.get("extra_info", {}).get("kind") == "checker"]
    ref: dict[tuple[str, str], float] = {}
    for b in chk:
        e = b["extra_info"]
        if e["tool"] == "gradcheck":
            ref[(e["case"], e["mode"])] = float(b["stats"]["median"])
    rows = []
    for b in chk:
        e = b["extra_info"]
        t = float(b["stats"]["median"])
        slow = ref.get((e["case"], "slow"))
        fast = ref.get((e["case"], "fast"))
        rows.append(
            CheckerRow(
                case=e["case"],
                case_label=e.get("case_label", e["case"]),
                tool=e["tool"],
                mode=e["mode"],
                median=t,
                n_evals=e.get("n_evals"),
                x_gradcheck_slow=slow / t if slow else None,
                x_gradcheck_fast=fast / t if fast else None,
            )
        )
    rows.sort(key=lambda r: (r.case, r.tool == "gradcheck", r.mode))
    return rows


def memory_rows(benches: Sequence[dict[str, Any]]) -> list[MemoryRow]:
    rows = []
    for b in benches:
        e = b.get("extra_info", {})
        if "peak_bytes" in e:
            rows.append(
                MemoryRow(
                    shape_label=e.get("shape_label", e.get("shape", "?")),
                    dtype=e["dtype"],
                    convention=e.get("convention", ""),
                    peak_bytes=int(e["peak_bytes"]),
                    input_bytes=int(e["input_bytes"]),
                    io_bytes=int(e["io_bytes"]),
                )
            )
    rows.sort(key=lambda r: (_order(r.shape_label[:1], SHAPE_ORDER), r.dtype, r.convention))
    return rows


def bug_rows(benches: Sequence[dict[str, Any]]) -> list[BugRow]:
    rows = []
    for b in benches:
        e = b.get("extra_info", {})
        if e.get("kind") == "bug-detection":
            fast = e.get("fast_caught")
            rows.append(
                BugRow(
                    case=e["case"],
                    case_label=e.get("case_label", e["case"]),
                    dtype=e["dtype"],
                    size=float(e["size"]),
                    planted=int(e["planted"]),
                    fast_caught=None if fast is None else int(fast),
                    ours_caught=int(e["ours_caught"]),
                    ours_located=int(e["ours_located"]),
                )
            )
    rows.sort(key=lambda r: (r.case, r.size == 0, r.dtype, r.size))
    return rows


@dataclass(frozen=True)
class ScaleRow:
    """A row of ``bench_scale``: the issue-12 layer's checks and gradcheck's fast mode, or
    one size of the cost-growth table."""

    case: str  # issue12 | growth
    case_label: str
    tool: str
    mode: str  # default, dx-bug, K-bug, fast (gradcheck) | auto, full (growth)
    median: float
    n_elements: int
    n_evals: int | None
    n_checked: int | None
    coverage_used: str
    peak_bytes: int | None
    layer_bytes: int | None
    found_by: str

    @property
    def peak_ratio(self) -> float | None:
        """Peak working memory of a check / the layer's tensors."""
        if self.peak_bytes is None or not self.layer_bytes:
            return None
        return self.peak_bytes / self.layer_bytes


def scale_rows(benches: Sequence[dict[str, Any]]) -> list[ScaleRow]:
    rows = []
    for b in benches:
        e = b.get("extra_info", {})
        if e.get("kind") != "scale":
            continue
        rows.append(
            ScaleRow(
                case=e["case"],
                case_label=e.get("case_label", e["case"]),
                tool=e["tool"],
                mode=e["mode"],
                median=float(b["stats"]["median"]),
                n_elements=int(e.get("n_elements", 0)),
                n_evals=e.get("n_evals"),
                n_checked=e.get("n_checked"),
                coverage_used=str(e.get("coverage_used", "")),
                peak_bytes=e.get("check_peak_bytes"),
                layer_bytes=e.get("layer_bytes"),
                found_by=str(e.get("found_by", "")),
            )
        )
    modes = ("default", "dx-bug", "K-bug", "fast", "auto", "full")
    rows.sort(key=lambda r: (r.case != "issue12", r.n_elements, _order(r.mode, modes)))
    return rows


def _issue12(benches: Sequence[dict[str, Any]]) -> tuple[dict[str, ScaleRow], float | None]:
    """The issue-12 rows by mode, and gradcheck fast mode's median on the same function."""
    rows = {r.mode: r for r in scale_rows(benches) if r.case == "issue12"}
    fast = rows.get("fast")
    return rows, fast.median if fast and fast.tool == "gradcheck" else None


def scale_targets(benches: Sequence[dict[str, Any]]) -> list[Target]:
    """Issue 12's targets: the default check within 10x gradcheck fast's time, a 0.1 % error
    in one element of dx or K caught and located within 30x, working memory <= 8x."""
    rows, fast = _issue12(benches)
    out = []
    for mode, what, times in (
        ("default", "check_layer default on the issue-12 layer", 10),
        ("dx-bug", "a 0.1 % error in one element of dx caught and located", 30),
        ("K-bug", "a 0.1 % error in one element of K caught and located", 30),
    ):
        claim = f"{what}: at least 1/{times} of gradcheck fast's speed (>= {1 / times:.3g}x)"
        r = rows.get(mode)
        if r is None or fast is None:
            out.append(Target(claim, "not measured", None))
            continue
        v = fast / r.median
        out.append(
            Target(claim, f"{v:.3f}x ({r.median / fast:.1f} times its time)", v >= 1 / times)
        )
    r = rows.get("default")
    ratio = r.peak_ratio if r else None
    out.append(
        Target(
            "working memory of that default check <= 8x the layer's tensors",
            "not measured" if ratio is None else f"{ratio:.2f}x",
            None if ratio is None else ratio <= 8,
        )
    )
    return out


@dataclass(frozen=True)
class Target:
    claim: str
    measured: str
    met: bool | None  # None: not measured in this run


def targets(benches: Sequence[dict[str, Any]]) -> list[Target]:
    """The performance targets of the benchmarks and checker issues, judged on this run."""
    rows = conv_rows(benches)
    out: list[Target] = []

    def fast(shape: str, dtype: str, op: str) -> list[ConvRow]:
        return [r for r in rows if (r.impl, r.shape, r.dtype, r.op) == ("fast", shape, dtype, op)]

    def judge(claim: str, hits: list[ConvRow], value: Any, ok: Any, unit: str) -> None:
        vals = [value(r) for r in hits if value(r) is not None]
        if not vals:
            out.append(Target(claim, "not measured", None))
            return
        text = ", ".join(f"{r.convention} {value(r):{unit}}" for r in hits if value(r) is not None)
        out.append(Target(claim, text, all(ok(v) for v in vals)))

    for dtype in ("float32", "float64"):
        judge(
            f"forward at C >= 60 % of GEMM peak ({dtype}), %",
            fast("C", dtype, "forward"),
            lambda r: r.pct_peak,
            lambda v: v >= 60,
            ".1f",
        )
        judge(
            f"forward at B >= 40 % of GEMM peak ({dtype}), %",
            fast("B", dtype, "forward"),
            lambda r: r.pct_peak,
            lambda v: v >= 40,
            ".1f",
        )
    for shape in ("B", "C"):
        judge(
            f"float64 forward+backward at {shape} >= PyTorch (x PyTorch >= 1)",
            fast(shape, "float64", "forward+backward"),
            lambda r: r.x_torch,
            lambda v: v >= 1,
            ".2f",
        )
        judge(
            f"float32 forward+backward at {shape} >= half PyTorch (x PyTorch >= 0.5)",
            fast(shape, "float32", "forward+backward"),
            lambda r: r.x_torch,
            lambda v: v >= 0.5,
            ".2f",
        )
    for dtype in ("float32", "float64"):
        judge(
            f"forward at D under 50 µs ({dtype}), µs",
            fast("D", dtype, "forward"),
            lambda r: r.median * 1e6,
            lambda v: v < 50,
            ".1f",
        )
    mem = [m for m in memory_rows(benches) if m.shape_label.startswith("B")]
    if mem:
        out.append(
            Target(
                "peak memory of forward+backward at B <= 3x (in + out + grads)",
                ", ".join(f"{m.dtype} {m.convention} {m.ratio:.2f}x" for m in mem),
                all(m.ratio <= 3 for m in mem),
            )
        )
    else:
        out.append(Target("peak memory of forward+backward at B <= 3x", "not measured", None))
    chk = {(c.case, c.tool, c.mode): c for c in checker_rows(benches)}
    for case, need in (("conv-large", 20.0), ("conv-small", 4.0)):
        c = chk.get((case, "check_layer", "full"))
        v = c.x_gradcheck_slow if c else None
        out.append(
            Target(
                f"check_layer full on {case} >= {need:g}x faster than gradcheck slow",
                "not measured" if v is None else f"{v:.1f}x",
                None if v is None else v >= need,
            )
        )
    c = chk.get(("torch-conv", "check_function", "full"))
    v = c.x_gradcheck_slow if c else None
    out.append(
        Target(
            "torch door: check_function full on a custom conv Function >= 20x faster than "
            "gradcheck slow",
            "not measured" if v is None else f"{v:.1f}x",
            None if v is None else v >= 20,
        )
    )
    out += _bug_targets(bug_rows(benches))
    c = chk.get(("conv-small", "check_layer", "auto"))
    v = c.x_gradcheck_fast if c else None
    out.append(
        Target(
            "check_layer auto on conv-small at least 1/15 of gradcheck fast's speed (>= 0.067x)",
            "not measured" if v is None else f"{v:.3f}x",
            None if v is None else v >= 1 / 15,
        )
    )
    return out + scale_targets(benches)


def _bug_targets(rows: Sequence[BugRow]) -> list[Target]:
    """The torch door's reach: every planted single-element bug caught and located, and no
    false alarm on the correct float32 Function."""
    bugs = [r for r in rows if r.size > 0]
    fast = [r.fast_caught for r in bugs if r.fast_caught is not None]
    clean = [r for r in rows if r.size == 0 and r.dtype == "float32"]
    planted = sum(r.planted for r in bugs)
    return [
        Target(
            "torch door: every planted single-element dx bug (0.1 % to 10 %) caught and located",
            "not measured"
            if not bugs
            else f"located {sum(r.ours_located for r in bugs)} / {planted}"
            + (f" (gradcheck fast caught {sum(fast)} / {planted})" if fast else ""),
            None if not bugs else all(r.ours_located == r.planted for r in bugs),
        ),
        Target(
            "torch door: no false alarm on a correct float32 Function",
            "not measured"
            if not clean
            else f"{sum(r.ours_caught for r in clean)} / {sum(r.planted for r in clean)}",
            None if not clean else all(r.ours_caught == 0 for r in clean),
        ),
    ]


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None or math.isnan(value) else f"{value:{spec}}{suffix}"


def _ratio(value: float | None) -> str:
    """A speed-up ``12.3x``; below 0.1 with two significant digits (``0.021x``), not ``0.0x``."""
    return _num(value, ".1f" if value is None or value >= 0.1 else ".2g", "x")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def machine_lines(data: dict[str, Any]) -> list[str]:
    mi = data.get("machine_info", {})
    info = mi.get("convgrad", {})
    blas = ", ".join(
        " ".join(str(p.get(k)) for k in ("internal_api", "version", "architecture") if p.get(k))
        + (f" ({p['num_threads']} threads)" if p.get("num_threads") else "")
        for p in info.get("blas", [])
    )
    lines = [
        f"- CPU: {info.get('cpu') or mi.get('processor') or '?'}, {info.get('cores') or '?'} cores",
        f"- Python {info.get('python') or mi.get('python_version', '?')}, "
        f"numpy {info.get('numpy', '?')}" + (f", BLAS: {blas}" if blas else ""),
        f"- PyTorch: {info.get('torch') or 'not installed'}"
        + (f" ({info['torch_threads']} threads)" if info.get("torch_threads") else "")
        + f"; scipy: {info.get('scipy') or 'not installed'}"
        + f"; mygrad: {info.get('mygrad') or 'not installed'}",
    ]
    if info.get("env"):
        lines.append(f"- environment: {info['env']}")
    if data.get("datetime"):
        lines.append(f"- run: {data['datetime']}")
    return lines


def _shape_row(sh: Any) -> list[str]:
    dims = [str(sh.N), str(sh.C_in), f"{sh.H} x {sh.W}", str(sh.C_out), str(sh.k)]
    return [sh.name, *dims, str(sh.stride), str(sh.padding), SHAPE_MEANING.get(sh.name, "")]


def render_markdown(data: dict[str, Any], png_name: str | None = None) -> str:
    benches = data["benchmarks"]
    peaks = gemm_peaks(benches)
    rows = conv_rows(benches)
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks.report` from one `make bench` run; "
        "every number below was measured in that run. Throughput is the median round; "
        "forward counts 2·N·C_out·H_out·W_out·C_in·kh·kw flops, backward twice that. "
        "On a shared machine a busy spell lowers any row, the GEMM peak included; "
        "compare the median with the best-round column before trusting a ratio.",
        "",
        "## Machine",
        "",
        *machine_lines(data),
        "",
        "## Shapes",
        "",
        "Every convolution row names its shape by a code: N samples of C_in maps of H x W, "
        "C_out maps out, a k x k kernel (stride 1, no padding unless stated).",
        "",
        *_table(
            ["code", "N", "C_in", "H x W", "C_out", "k", "stride", "padding", "stands for"],
            [_shape_row(sh) for sh in SHAPES],
        ),
        "",
        "Ratios point one way throughout: how many times faster the row is than the peer it "
        "names (above 1: faster; `x PyTorch` = this row's GFLOP/s / PyTorch's).",
        "",
        "## GEMM peak (numpy matmul 2048 x 2048, best round)",
        "",
        *_table(["dtype", "GFLOP/s"], [[d, f"{g:.1f}"] for d, g in sorted(peaks.items())]),
        "",
        "## Targets",
        "",
        *_table(
            ["target", "measured (impl fast; per convention)", "met"],
            [
                [t.claim, t.measured, {True: "yes", False: "**no**", None: "–"}[t.met]]
                for t in targets(benches)
            ],
        ),
        "",
    ]
    if rows:
        lines += [
            "## Convolution throughput",
            "",
            "`x PyTorch` = this row's GFLOP/s / PyTorch's for the same shape, dtype and op. "
            "The last column is from the fastest round: where it is far above the median, "
            "the machine was busy during that benchmark.",
            "",
            *_table(
                [
                    "shape",
                    "dtype",
                    "op",
                    "impl",
                    "convention",
                    "median",
                    "GFLOP/s",
                    "% of GEMM peak",
                    "x PyTorch",
                    "best-round GFLOP/s",
                ],
                [
                    [
                        r.shape_label,
                        r.dtype,
                        r.op,
                        IMPL_LABEL.get(r.impl, r.impl),
                        r.convention,
                        fmt_time(r.median),
                        f"{r.gflops:.2f}",
                        _num(r.pct_peak, ".1f", " %"),
                        _num(r.x_torch, ".2f"),
                        _num(r.gflops_best, ".2f"),
                    ]
                    for r in rows
                ],
            ),
            "",
        ]
    mem = memory_rows(benches)
    if mem:
        lines += [
            "## Peak memory of forward+backward (impl fast)",
            "",
            "Peak = inputs (x, K, b, dy, held before the call) + the largest amount of new "
            "memory numpy held during the call (tracemalloc). Budget: 3x (inputs + outputs + "
            "gradients).",
            "",
            *_table(
                ["shape", "dtype", "convention", "inputs+outputs+grads", "peak", "peak / io"],
                [
                    [
                        m.shape_label,
                        m.dtype,
                        m.convention,
                        f"{m.io_bytes / 2**20:.2f} MiB",
                        f"{(m.input_bytes + m.peak_bytes) / 2**20:.2f} MiB",
                        f"{m.ratio:.2f}x",
                    ]
                    for m in mem
                ],
            ),
            "",
        ]
    chk = checker_rows(benches)
    if chk:
        lines += [
            "## Cost of a full gradient check (float64)",
            "",
            "`vs gradcheck slow` = gradcheck slow-mode time / this row's time, `vs gradcheck "
            "fast` = gradcheck fast-mode time / this row's time: like every ratio on this page, "
            "how many times faster this row is (below 1: slower). "
            "torch.autograd.gradcheck checks every input (x, weight, bias) and runs with "
            "one intra-op thread, its fastest setting for thousands of tiny calls on this "
            "machine.",
            "",
            *_table(
                [
                    "case",
                    "tool",
                    "mode",
                    "median",
                    "forward calls",
                    "vs gradcheck slow",
                    "vs gradcheck fast",
                ],
                [
                    [
                        c.case_label,
                        c.tool,
                        c.mode,
                        fmt_time(c.median),
                        str(c.n_evals) if c.n_evals is not None else "–",
                        _ratio(c.x_gradcheck_slow),
                        _ratio(c.x_gradcheck_fast),
                    ]
                    for c in chk
                ],
            ),
            "",
        ]
    lines += _bug_section(bug_rows(benches))
    lines += scale_sections(benches)
    if png_name:
        lines += ["## Plot", "", f"![throughput per shape and implementation]({png_name})", ""]
    return "\n".join(lines)


BUG_HEADER = ("case", "dtype", "error", "planted", "gradcheck fast caught", "ours caught",
              "ours located")  # fmt: skip


def _bug_section(rows: Sequence[BugRow]) -> list[str]:
    if not rows:
        return []

    def size(r: BugRow) -> str:
        return "none (correct)" if r.size == 0 else f"{100 * r.size:g} %"

    return [
        "## Single-element bugs in dx (torch door)",
        "",
        "One element of dx, drawn per seed, scaled by 1 + error in a custom autograd "
        "Function's backward; counts over the seeds (planted). `caught`: the check failed; "
        "`located`: the worst element it reports is the planted one and the only mismatch. "
        "With no error, a catch is a false alarm. gradcheck's fast mode is not run in "
        "float32, where it warns that it will likely fail.",
        "",
        *_table(
            BUG_HEADER,
            [
                [
                    r.case_label,
                    r.dtype,
                    size(r),
                    str(r.planted),
                    "–" if r.fast_caught is None else str(r.fast_caught),
                    str(r.ours_caught),
                    str(r.ours_located) if r.size else "–",
                ]
                for r in rows
            ],
        ),
        "",
    ]


def _mib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:.1f} MiB"


def scale_sections(benches: Sequence[dict[str, Any]]) -> list[str]:
    """The issue-12 table and the cost-growth table (``bench_scale``), when measured."""
    lines: list[str] = []
    rows, fast = _issue12(benches)
    if rows:
        label = next(iter(rows.values())).case_label
        lines += [
            '## coverage="auto" at the issue-12 layer (float64)',
            "",
            f"{label}, `check_layer` with its defaults, and torch's fast mode on "
            "tanh(conv2d(x, K, b)) with the same tensors in the same run. A bug row plants a "
            "0.1 % error in one element of dx or K; it is caught and located (the report's one "
            "mismatch at that element), by the element-by-element check or by a failing "
            "projection and group testing. `vs gradcheck fast` = its time / this row's time.",
            "",
            *_table(
                [
                    "tool",
                    "mode",
                    "median",
                    "forward calls",
                    "elements checked",
                    "found by",
                    "vs gradcheck fast",
                    "peak / tensors",
                ],
                [
                    [
                        r.tool,
                        r.mode,
                        fmt_time(r.median),
                        _num(r.n_evals, "d"),
                        _num(r.n_checked, "d"),
                        r.found_by or "–",
                        _num(fast / r.median if fast else None, ".3f", "x"),
                        _num(r.peak_ratio, ".2f", "x"),
                    ]
                    for r in rows.values()
                ],
            ),
            "",
        ]
    growth = [r for r in scale_rows(benches) if r.case == "growth"]
    if growth:
        lines += [
            "## Cost growth of a check (float64)",
            "",
            "Conv2D(4, 8, 3, xcorr, tanh) on x (N, 4, H, H); elements = those of x, K and b. "
            "Peak: tracemalloc's peak during one untimed check, against the layer's tensors "
            "(x, y, dx, K, b and their gradients; a check may hold 32 MiB whatever their size).",
            "",
            *_table(
                [
                    "elements",
                    "layer",
                    "coverage",
                    "median",
                    "forward calls",
                    "elements checked",
                    "peak",
                    "peak / tensors",
                ],
                [
                    [
                        f"{r.n_elements:,}",
                        r.case_label,
                        f"{r.mode} ({r.coverage_used})",
                        fmt_time(r.median),
                        _num(r.n_evals, "d"),
                        _num(r.n_checked, ",d"),
                        _mib(r.peak_bytes),
                        _num(r.peak_ratio, ".2f", "x"),
                    ]
                    for r in growth
                ],
            ),
            "",
        ]
    return lines


def plot(data: dict[str, Any], path: str | Path) -> None:
    """Grouped bars of GFLOP/s per shape and implementation, one panel per (op, dtype).

    A dashed line marks the GEMM peak of the panel's dtype.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = data["benchmarks"]
    peaks = gemm_peaks(benches)
    rows = conv_rows(benches)
    ops = [op for op in ("forward", "forward+backward") if any(r.op == op for r in rows)]
    dtypes = sorted({r.dtype for r in rows}) or sorted(peaks)
    shapes = sorted({r.shape for r in rows}, key=lambda s: (_order(s, SHAPE_ORDER), s))
    series = []
    for impl in IMPL_ORDER:
        for conv in ("conv", "xcorr"):
            if any(r.impl == impl and r.convention == conv for r in rows):
                series.append((impl, conv))
    fig, axes = plt.subplots(
        max(len(ops), 1), max(len(dtypes), 1), figsize=(11, 7), squeeze=False, sharey=True
    )
    width = 0.8 / max(len(series), 1)
    for i, op in enumerate(ops):
        for j, dt in enumerate(dtypes):
            ax = axes[i][j]
            for k, (impl, conv) in enumerate(series):
                vals = []
                for s in shapes:
                    hit = [
                        r.gflops
                        for r in rows
                        if (r.shape, r.dtype, r.op, r.impl, r.convention) == (s, dt, op, impl, conv)
                    ]
                    vals.append(hit[0] if hit else 0.0)
                xs = [x + (k - (len(series) - 1) / 2) * width for x in range(len(shapes))]
                ax.bar(xs, vals, width, label=f"{IMPL_LABEL.get(impl, impl)} ({conv})")
            if dt in peaks:
                ax.axhline(peaks[dt], color="k", ls="--", lw=1, label="GEMM peak")
            ax.set_yscale("log")
            ax.set_xticks(range(len(shapes)), shapes)
            ax.set_title(f"{op}, {dt}", fontsize=10)
            if j == 0:
                ax.set_ylabel("GFLOP/s (median, log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Convolution throughput per shape and implementation", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("json", help="pytest-benchmark JSON (--benchmark-json output)")
    parser.add_argument("--md", default=str(DEFAULT_MD), help="markdown output path")
    parser.add_argument("--png", default=str(DEFAULT_PNG), help="PNG output ('' to skip)")
    args = parser.parse_args(argv)
    data = load(args.json)
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    if args.png:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    png_name = None
    if args.png:
        try:
            plot(data, args.png)
            png_name = os.path.relpath(Path(args.png).resolve(), Path(args.md).resolve().parent)
        except ImportError:
            print("matplotlib not installed: no plot written")
    Path(args.md).write_text(render_markdown(data, png_name), encoding="utf-8")
    print(f"wrote {args.md}" + (f" and {args.png}" if png_name else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
