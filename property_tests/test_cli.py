"""python -m checks: pass (0), mismatch (1) and bad TARGET (2) as real subprocesses; the other
usage errors in-process through ``checks.doors.cli.main``: one line on stderr, exit 2, no traceback
unless --debug."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from checks.doors.cli import main

LAYERS = textwrap.dedent(
    """
    import numpy as np
    import cnn_ref


    class KernelNotFlipped(cnn_ref.Conv2D):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["K"] = np.ascontiguousarray(self.grads["K"][..., ::-1, ::-1])
            return dx


    def good():
        return cnn_ref.Conv2D(2, 3, 2, seed=0)


    def bad():
        return KernelNotFlipped(2, 3, 3, seed=0)


    def raises():
        raise RuntimeError("no weights file")


    def not_a_layer():
        return [1, 2, 3]


    instance = cnn_ref.Dense(4, 2, seed=0)


    class MutatesInput(cnn_ref.Dense):
        def forward(self, x):
            y = super().forward(x)
            x *= 2.0
            return y


    def mutates():
        return MutatesInput(4, 2, seed=0)
    """
)


@pytest.fixture
def layers_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_layers.py"
    path.write_text(LAYERS)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "checks", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1"},
    )


def test_subprocess_pass_exits_0_with_a_table(layers_file: Path) -> None:
    proc = _run("layer", f"{layers_file}:good", "--input-shape", "2,2,5,5")
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if "PASS" in line]
    assert [row.split()[1] for row in rows[:3]] == ["x", "K", "b"], proc.stdout
    assert "FAIL" not in proc.stdout


def test_subprocess_mismatch_exits_1_with_hint_json_and_plot(
    layers_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    report, picture = tmp_path / "r.json", tmp_path / "r.png"
    proc = _run(
        "layer",
        f"{layers_file}:bad",
        "--input-shape",
        "2,2,6,6",
        "--json",
        str(report),
        "--plot",
        str(picture),
    )
    assert proc.returncode == 1, proc.stderr
    assert "FAIL" in proc.stdout and "MISMATCH" in proc.stdout
    assert "Hint" in proc.stdout and "rot180" in proc.stdout
    doc = json.loads(report.read_text())
    assert doc["ok"] is False
    assert [t["name"] for t in doc["tensors"] if not t["ok"]] == ["K"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_subprocess_bad_target_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = _run("layer", "no_such_package.layers:make")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot import module 'no_such_package.layers'" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["layer", "{file}:missing"], "has no attribute 'missing'"),
        (["layer", "{file}:raises"], "factory {file}:raises raised RuntimeError: no weights file"),
        (["layer", "{file}:not_a_layer"], "returned an object of type list, not a layer"),
        (["layer", "{file}:good", "--input-shape", "2,5,5,5"], "rejected an input of shape"),
        (["layer", "{file}:good", "--input-shape", "2,x"], "--input-shape must be"),
        (["layer", "nocolon"], "TARGET must be 'package.module:factory'"),
        (["layer", "/no/such/file.py:f"], "does not exist"),
        (["layer", "{file}:good", "--method", "magic"], "invalid choice: 'magic'"),
        (["layer", "{file}:good", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["layer", "{file}:good", "--workers", "0"], "--workers must be at least 1, got 0"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    args: list[str], message: str, layers_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(file=layers_file) for a in args]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message.format(file=layers_file) in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_argparse_errors_exit_2(layers_file: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["layer", f"{layers_file}:good", "--coverage", "most"])
    assert info.value.code == 2


def test_debug_shows_the_traceback(layers_file: Path) -> None:
    with pytest.raises(Exception, match="no weights file") as info:
        main(["layer", f"{layers_file}:raises", "--debug"])
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_broken_contract_exits_2_with_one_line_on_stderr(layers_file: Path, capsys) -> None:
    assert main(["layer", f"{layers_file}:mutates", "--input-shape", "3,4"]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert "contract error" in captured.err and "mutat" in captured.err
    assert "CONTRACT" in captured.out


def test_target_may_name_a_layer_instance_in_a_module(layers_file: Path, capsys) -> None:
    assert main(["layer", f"{layers_file}:instance", "--input-shape", "3,4"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_module_target_form(capsys) -> None:
    # package.module:factory, a factory that exists in the project
    assert main(["layer", "cnn_ref:Flatten", "--input-shape", "2,3,2,2"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_progress_counts_forward_calls_and_restores_the_method() -> None:
    import numpy as np

    import cnn_ref
    from checks.doors.cli import _counting_forward

    layer = cnn_ref.Dense(3, 2, seed=0)
    seen: list[int] = []
    with _counting_forward(layer, seen.append):
        for _ in range(20):
            layer.forward(np.ones((1, 3)))
    assert seen == [16, 20]
    assert "forward" not in vars(layer)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # the layer's tensors after one forward, and the check's budget, do not fit in 1 MB
        (["--input-shape", "2,2,5,5", "--max-memory", "1MB"], "977 KiB --max-memory"),
        # x alone would not fit in what the machine has: refused before x is allocated
        (["--input-shape", "100000,2,1000,1000"], "x and dx take 2.91 TiB"),
        (["--max-memory", "lots"], "--max-memory: not a size: 'lots'"),
    ],
)
def test_a_check_that_would_not_fit_in_memory_exits_2_with_one_line(
    args: list[str], message: str, layers_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["layer", f"{layers_file}:good", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    if "MB" in args:
        assert "would need about 32 MiB of memory" in lines[0]


def test_a_check_that_fits_the_given_memory_runs(layers_file: Path, capsys) -> None:
    args = ["layer", f"{layers_file}:good", "--input-shape", "2,2,5,5", "--max-memory", "64MiB"]
    assert main(args) == 0
    assert "PASS" in capsys.readouterr().out


def test_the_dtype_of_x_follows_the_layers_parameters(tmp_path: Path, capsys) -> None:
    """Without --dtype a float32 layer was checked with float64 x (a different layer from the
    one the user runs); now x takes the parameters' dtype, and --dtype still overrides."""
    path = tmp_path / "f32_layers.py"
    path.write_text(
        "import numpy as np\nimport cnn_ref\n\n\n"
        "def conv32():\n    return cnn_ref.Conv2D(2, 3, 2, seed=0, dtype=np.float32)\n"
    )
    for extra, expected in (([], "float32"), (["--dtype", "float64"], "float64")):
        report = tmp_path / f"r{len(extra)}.json"
        args = ["layer", f"{path}:conv32", "--input-shape", "2,2,5,5", "--json", str(report)]
        assert main([*args, *extra]) == 0
        doc = json.loads(report.read_text())
        assert doc["tensors"][0]["name"] == "x" and doc["tensors"][0]["dtype"] == expected
    capsys.readouterr()


def test_the_reproduce_line_is_a_command_that_reproduces(layers_file: Path, tmp_path: Path, capsys):
    """From the CLI the Reproduce: line said check_layer(...); it is the command itself now,
    in the message and in the JSON report, and running it gives the same verdict."""
    import shlex

    report = tmp_path / "r.json"
    args = ["layer", f"{layers_file}:bad", "--input-shape", "2,2,6,6", "--coverage", "full"]
    assert main([*args, "--json", str(report)]) == 1
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("Reproduce: "))
    command = line.removeprefix("Reproduce: ")
    assert command.startswith("python -m checks layer ") and "--coverage full" in command
    assert "--dtype float64" in command and "--seed 0" in command
    assert json.loads(report.read_text())["reproduce"] == command
    assert main(shlex.split(command)[3:]) == 1
    capsys.readouterr()


def test_x_from_a_file_and_factory_arguments(tmp_path: Path, capsys) -> None:
    """x was always a random normal of --input-shape and factories took no arguments."""
    import numpy as np

    path = tmp_path / "fac.py"
    path.write_text(
        "import cnn_ref\n\n\ndef conv(c_in=2, c_out=3, k=2, activation='identity'):\n"
        "    return cnn_ref.Conv2D(c_in, c_out, k, activation=activation, seed=0)\n"
    )
    x = np.random.default_rng(5).standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "many.npz", x=x.astype(np.float64), other=np.ones(3))
    report = tmp_path / "r.json"
    args = ["layer", f"{path}:conv", "--arg", "c_in=4", "--arg", "activation=tanh"]
    assert main([*args, "--input", str(tmp_path / "x.npy"), "--json", str(report)]) == 0
    doc = json.loads(report.read_text())
    assert doc["tensors"][0]["shape"] == [2, 4, 6, 6] and doc["tensors"][0]["dtype"] == "float32"
    assert doc["tensors"][1]["shape"] == [3, 4, 2, 2]  # c_in=4 reached the factory
    assert "--input" in doc["reproduce"] and "--arg c_in=4" in doc["reproduce"]
    assert main([*args, "--input", str(tmp_path / "many.npz"), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["tensors"][0]["dtype"] == "float64"
    capsys.readouterr()
    # usage errors: one line, exit 2
    np.savez(tmp_path / "two.npz", a=x, b=x)
    for bad in (
        [*args, "--input", str(tmp_path / "two.npz")],
        [*args, "--input", str(tmp_path / "x.npy"), "--input-shape", "2,4,6,6"],
        ["layer", f"{path}:conv", "--arg", "4", "--input-shape", "2,2,5,5"],
        [*args, "--input", str(tmp_path / "missing.npy")],
    ):
        assert main(bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err


FUNCS = textwrap.dedent(
    """
    import numpy as np


    def affine(x, w, b):
        return np.tanh(x @ w + b)


    def affine_vjp(dy, x, w, b):
        g = dy * (1 - np.tanh(x @ w + b) ** 2)
        return g @ w.T, x.T @ g, g.sum(axis=0)


    def affine_vjp_mean_bias(dy, x, w, b):
        g = dy * (1 - np.tanh(x @ w + b) ** 2)
        return g @ w.T, x.T @ g, g.mean(axis=0)
    """
)


def test_function_command_reads_named_inputs_from_an_npz(tmp_path: Path, capsys) -> None:
    """Multi-input functions from the shell: the .npz's arrays by the function's argument
    names, in any order in the file."""
    import numpy as np

    path = tmp_path / "fns.py"
    path.write_text(FUNCS)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "args.npz", b=rng.standard_normal(3), x=rng.standard_normal((5, 4)),
             w=rng.standard_normal((4, 3)))  # fmt: skip
    report = tmp_path / "r.json"
    base = ["function", f"{path}:affine"]
    inp = ["--input", str(tmp_path / "args.npz"), "--json", str(report)]
    assert main([*base, f"{path}:affine_vjp", *inp]) == 0
    assert [t["shape"] for t in json.loads(report.read_text())["tensors"]] == [[5, 4], [4, 3], [3]]
    assert main([*base, f"{path}:affine_vjp_mean_bias", *inp]) == 1
    out = capsys.readouterr().out
    assert "1/5" in out and "Reproduce: python -m checks function " in out
    np.savez(tmp_path / "wrong.npz", x=np.ones((5, 4)), w=np.ones((4, 3)))
    assert main([*base, f"{path}:affine_vjp", "--input", str(tmp_path / "wrong.npz")]) == 2
    err = capsys.readouterr().err
    assert "the function takes ['x', 'w', 'b']" in err and len(err.strip().splitlines()) == 1


def test_workers_run_the_check_on_a_process_pool(tmp_path: Path, capsys) -> None:
    """--workers N: the same verdicts (a pass, and a planted 1 % error in one element of dx
    found where it is), and the Reproduce: line keeps the option."""
    base = ["layer", "cnn_ref:Conv2D", "--arg", "in_channels=2", "--arg", "out_channels=3",
            "--arg", "kernel_size=3", "--input-shape", "2,2,6,6", "--workers", "2"]  # fmt: skip
    assert main(base) == 0
    assert "PASS cnn_ref:Conv2D" in capsys.readouterr().out
    planted = "property_tests.meta_tests._executor_layers:PlantedConv"
    report = tmp_path / "r.json"
    args = [base[0], planted, *base[2:], "--arg", "index=(1, 0, 2, 3)", "--arg", "rel=0.01"]
    assert main([*args, "--coverage", "full", "--json", str(report)]) == 1
    data = json.loads(report.read_text())
    tx = next(t for t in data["tensors"] if t["name"] == "x")
    assert tx["n_mismatched"] == 1 and tuple(tx["worst_index"]) == (1, 0, 2, 3)
    assert "--workers 2" in data["reproduce"]
    capsys.readouterr()


def test_without_jax_layers_run_and_a_jax_target_says_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """JAX is optional: the command line does not import it until a target is (f, args)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, checks.doors.cli; print('jax' in sys.modules)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout.strip() == "False", proc.stderr
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax raises ModuleNotFoundError
    path = tmp_path / "np_pair.py"
    path.write_text("import numpy as np\n\n\ndef make():\n    return np.tanh, (np.ones(3),)\n")
    assert main(["layer", "cnn_ref:Flatten", "--input-shape", "2,3,2,2"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["layer", f"{path}:make"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a JAX target (f, args) is checked with checks.jax" in err[0]
    assert "needs JAX: pip install" in err[0]
