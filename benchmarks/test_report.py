"""report.py on a small synthetic pytest-benchmark JSON: rows, percentages, ratios, PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report


def _bench(name: str, median: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "stats": {"median": median, "min": median}, "extra_info": extra}


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    gf = 1e9
    benches = [
        # GEMM peaks: 100 GFLOP/s float64, 200 float32 (gflops derived from flops/median).
        _bench("gemm64", 1.0, impl="gemm", op="matmul", dtype="float64", flops=100 * gf),
        _bench("gemm32", 0.5, impl="gemm", op="matmul", dtype="float32", flops=100 * gf),
        # Shape B float64 forward: fast 40 GFLOP/s, torch 50 GFLOP/s.
        _bench(
            "fastB",
            0.25,
            impl="fast",
            convention="conv",
            op="forward",
            dtype="float64",
            shape="B",
            shape_label="B(32,64,32,32,64,3)",
            flops=10 * gf,
        ),
        _bench(
            "torchB",
            0.2,
            impl="torch",
            convention="xcorr",
            op="forward",
            dtype="float64",
            shape="B",
            shape_label="B(32,64,32,32,64,3)",
            flops=10 * gf,
        ),
        # Shape A float32 forward+backward: literal 2 GFLOP/s (1 % of the float32 peak), no torch.
        _bench(
            "litA",
            3.0,
            impl="literal",
            convention="xcorr",
            op="forward+backward",
            dtype="float32",
            shape="A",
            shape_label="A(32,3,32,32,16,5)",
            flops=6 * gf,
            gflops=2.0,
        ),
        _bench(
            "memB",
            0.3,
            impl="fast",
            convention="conv",
            op="forward+backward",
            dtype="float64",
            shape="B",
            shape_label="B(32,64,32,32,64,3)",
            flops=30 * gf,
            peak_bytes=300,
            input_bytes=100,
            io_bytes=200,
        ),
        # Checker: ours 0.5 s; gradcheck slow 10 s, fast 0.25 s.
        _bench(
            "ours",
            0.5,
            kind="checker",
            case="conv-large",
            case_label="conv-large: x(4,4,16,16)",
            tool="check_layer",
            mode="full",
            n_evals=40,
        ),
        _bench(
            "slow",
            10.0,
            kind="checker",
            case="conv-large",
            case_label="conv-large: x(4,4,16,16)",
            tool="gradcheck",
            mode="slow",
        ),
        _bench(
            "fast",
            0.25,
            kind="checker",
            case="conv-large",
            case_label="conv-large: x(4,4,16,16)",
            tool="gradcheck",
            mode="fast",
        ),
    ]
    data = {
        "benchmarks": benches,
        "machine_info": {
            "convgrad": {
                "cpu": "Test CPU 9000",
                "cores": 2,
                "numpy": "2.x",
                "blas": [{"internal_api": "openblas", "version": "0.3"}],
                "torch": "2.13.0",
                "python": "3.11",
            }
        },
        "datetime": "2026-01-01T00:00:00",
    }
    path = tmp_path / "last.json"
    path.write_text(json.dumps(data))
    return path


def _row(md: str, *cells: str) -> list[str]:
    """The cells of the one table row containing every string in ``cells``."""
    hits = [
        line for line in md.splitlines() if line.startswith("|") and all(c in line for c in cells)
    ]
    assert len(hits) == 1, (cells, hits)
    return [c.strip() for c in hits[0].strip("|").split("|")]


def test_gemm_peak_percent_and_torch_ratio_are_computed_per_dtype(synthetic: Path) -> None:
    md = report.render_markdown(report.load(synthetic))
    assert _row(md, "| float64 | 100.0")
    fast = _row(md, "cnn_ref fast", "forward |", "float64", "B(32")
    assert fast[5:] == ["250.00 ms", "40.00", "40.0 %", "0.80", "–"]
    torch = _row(md, "PyTorch conv2d", "float64")
    assert torch[6:9] == ["50.00", "50.0 %", "1.00"]
    lit = _row(md, "cnn_ref literal")
    assert lit[5:] == ["3.00 s", "2.00", "1.0 %", "–", "–"]  # no torch row for A float32


def test_memory_ratio_counts_inputs_held_before_the_call(synthetic: Path) -> None:
    rows = report.memory_rows(report.load(synthetic)["benchmarks"])
    assert [r.ratio for r in rows] == [2.0]  # (100 + 300) / 200
    md = report.render_markdown(report.load(synthetic))
    assert _row(md, "| 2.00x |")


def test_checker_ratios_against_gradcheck_slow_and_fast(synthetic: Path) -> None:
    md = report.render_markdown(report.load(synthetic))
    ours = _row(md, "| check_layer | full |")
    # both ratios say how many times faster the row is: 20x faster than slow mode, half
    # the speed of fast mode
    assert ours[3:] == ["500.00 ms", "40", "20.0x", "0.5x"]
    assert _row(md, "| gradcheck | slow |")[5] == "1.0x"


def test_the_shape_codes_are_defined_on_the_page(synthetic: Path) -> None:
    md = report.render_markdown(report.load(synthetic))
    for code in "ABCDSP":
        row = _row(md, f"| {code} |")
        assert row[0] == code and row[-1]  # every code with its geometry and what it stands for
    assert "Ratios point one way throughout" in md


def test_machine_section_names_cpu_blas_and_torch(synthetic: Path) -> None:
    md = report.render_markdown(report.load(synthetic))
    assert "Test CPU 9000, 2 cores" in md
    assert "BLAS: openblas 0.3" in md
    assert "PyTorch: 2.13.0" in md


def test_main_writes_markdown_and_png(synthetic: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    md, png = tmp_path / "out" / "RESULTS.md", tmp_path / "out" / "plot.png"
    md.parent.mkdir()
    assert report.main([str(synthetic), "--md", str(md), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![throughput per shape and implementation](plot.png)" in md.read_text()


def test_rejects_a_file_that_is_not_benchmark_json(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="no 'benchmarks' list"):
        report.load(bad)


def test_targets_judge_the_issue_thresholds(synthetic: Path) -> None:
    found = {t.claim: t for t in report.targets(report.load(synthetic)["benchmarks"])}
    b64 = found["forward at B >= 40 % of GEMM peak (float64), %"]
    assert (b64.measured, b64.met) == ("conv 40.0", True)
    assert found["forward at C >= 60 % of GEMM peak (float64), %"].met is None
    assert found["check_layer full on conv-large >= 20x faster than gradcheck slow"].met is True
    mem = found["peak memory of forward+backward at B <= 3x (in + out + grads)"]
    assert mem.met is True
    md = report.render_markdown(report.load(synthetic))
    assert _row(md, "forward at B >= 40 % of GEMM peak (float64)")[2] == "yes"


def test_gemm_peak_uses_the_best_round() -> None:
    benches = [
        {
            "stats": {"median": 2.0, "min": 1.0},
            "extra_info": {
                "impl": "gemm",
                "dtype": "float64",
                "flops": 1e9,
                "gflops": 0.5,
                "gflops_best": 1.0,
            },
        }
    ]
    assert report.gemm_peaks(benches) == {"float64": 1.0}


def _torch_door(
    ours: float, slow: float, bugs: list[tuple[str, float, int, Any, int, int]]
) -> list:
    """Checker rows of the torch door (ours and gradcheck slow, medians in s) and bug rows
    ``(dtype, size, planted, fast_caught, ours_caught, ours_located)``."""
    label = "torch-conv: x(4, 3, 10, 10)"
    rows = [
        _bench("ours", ours, kind="checker", case="torch-conv", case_label=label,
               tool="check_function", mode="full", n_evals=473),
        _bench("slow", slow, kind="checker", case="torch-conv", case_label=label,
               tool="gradcheck", mode="slow"),
    ]  # fmt: skip
    for dtype, size, planted, fast, caught, located in bugs:
        rows.append(
            _bench(f"bugs{size}", 1.0, kind="bug-detection", case="torch-conv", case_label=label,
                   dtype=dtype, size=size, planted=planted, fast_caught=fast,
                   ours_caught=caught, ours_located=located)
        )  # fmt: skip
    return rows


def test_torch_door_targets_judge_speed_location_and_false_alarms() -> None:
    met = _torch_door(0.05, 1.2, [("float64", 0.001, 8, 0, 8, 8), ("float64", 0.1, 8, 1, 8, 8),
                                  ("float32", 0.0, 8, None, 0, 0)])  # fmt: skip
    found = {t.claim: t for t in report.targets(met)}
    speed = found[
        "torch door: check_function full on a custom conv Function >= 20x faster than "
        "gradcheck slow"
    ]
    assert (speed.measured, speed.met) == ("24.0x", True)
    bugs = found[
        "torch door: every planted single-element dx bug (0.1 % to 10 %) caught and located"
    ]
    assert (bugs.measured, bugs.met) == ("located 16 / 16 (gradcheck fast caught 1 / 16)", True)
    clean = found["torch door: no false alarm on a correct float32 Function"]
    assert (clean.measured, clean.met) == ("0 / 8", True)

    missed = _torch_door(
        0.1, 1.2, [("float64", 0.001, 8, 0, 8, 7), ("float32", 0.0, 8, None, 1, 0)]
    )
    found = {t.claim: t for t in report.targets(missed)}
    assert [t.met for c, t in found.items() if c.startswith("torch door")] == [False] * 3


def test_torch_door_bug_table_shows_the_counts_and_ours_first() -> None:
    benches = _torch_door(0.05, 1.2, [("float32", 0.0, 8, None, 0, 0),
                                      ("float64", 0.01, 8, 2, 8, 7)])  # fmt: skip
    md = report.render_markdown({"benchmarks": benches})
    assert _row(md, "| float64 | 1 % |")[3:] == ["8", "2", "8", "7"]
    assert _row(md, "| float32 | none (correct) |")[3:] == ["8", "–", "0", "–"]
    table = [line for line in md.splitlines() if "| torch-conv" in line]
    assert "check_function" in table[0]  # ours first, then gradcheck
    assert _row(md, "| check_function | full |")[5] == "24.0x"
    assert _row(md, "| gradcheck | slow |")[5] == "1.0x"


def test_a_ratio_below_a_tenth_keeps_two_digits() -> None:
    assert [report._ratio(v) for v in (20.0, 0.5, 0.0213, None)] == ["20.0x", "0.5x", "0.021x", "–"]


def _scale(name: str, median: float, case: str, mode: str, **extra: Any) -> dict[str, Any]:
    tool = "gradcheck" if mode == "fast" else "check_layer"
    return _bench(name, median, kind="scale", case=case, case_label=f"{case} layer",
                  tool=tool, mode=mode, **extra)  # fmt: skip


def test_issue12_targets_and_the_cost_growth_table(tmp_path: Path) -> None:
    benches = [
        _scale(
            "ours",
            1.0,
            "issue12",
            "default",
            n_evals=70,
            n_checked=1000,
            check_peak_bytes=700,
            layer_bytes=100,
            n_elements=135712,
        ),
        _scale("fast", 0.125, "issue12", "fast", n_elements=135712),
        _scale("dx", 2.0, "issue12", "dx-bug", n_evals=131, found_by="projection"),
        _scale("K", 5.0, "issue12", "K-bug", n_evals=99, found_by="projection"),
        _scale(
            "g-full",
            3.0,
            "growth",
            "full",
            n_elements=4904,
            n_evals=348,
            n_checked=4904,
            coverage_used="full",
            check_peak_bytes=2**21,
            layer_bytes=2**20,
        ),
        _scale(
            "g-auto",
            0.5,
            "growth",
            "auto",
            n_elements=4904,
            n_evals=348,
            n_checked=4904,
            coverage_used="full",
            check_peak_bytes=2**21,
            layer_bytes=2**20,
        ),
    ]
    found = {t.claim: t for t in report.targets(benches)}
    speed = {k.split(":")[0]: t for k, t in found.items() if "gradcheck fast's speed" in k}
    default = speed["check_layer default on the issue-12 layer"]
    assert (default.measured, default.met) == ("0.125x (8.0 times its time)", True)
    assert speed["a 0.1 % error in one element of dx caught and located"].met is True  # 1/16
    k_bug = speed["a 0.1 % error in one element of K caught and located"]
    assert (k_bug.measured, k_bug.met) == ("0.025x (40.0 times its time)", False)  # 1/40 < 1/30
    mem = found["working memory of that default check <= 8x the layer's tensors"]
    assert (mem.measured, mem.met) == ("7.00x", True)
    md = report.render_markdown({"benchmarks": benches})
    assert _row(md, "| check_layer | default |")[2:] == [
        "1.00 s", "70", "1000", "–", "0.125x", "7.00x"]  # fmt: skip
    assert _row(md, "| check_layer | K-bug |")[5:7] == ["projection", "0.025x"]
    growth = [_row(md, "| 4,904 |", f"| {mode} (full) |") for mode in ("auto", "full")]
    assert [g[3] for g in growth] == ["500.00 ms", "3.00 s"]  # auto first
    assert growth[1][4:] == ["348", "4,904", "2.0 MiB", "2.00x"]


def test_issue12_targets_are_not_measured_without_the_scale_rows(synthetic: Path) -> None:
    found = report.targets(report.load(synthetic)["benchmarks"])
    issue12 = [
        t
        for t in found
        if ("issue-12" in t.claim or "0.1 %" in t.claim) and not t.claim.startswith("torch door")
    ]
    assert len(issue12) == 3 and all(t.met is None for t in issue12)
