"""python -m checks layer with JAX targets: a factory returning ``(f, args)`` is checked through
checks.jax.check_function; --order 2 checks the backward pass itself.

Ground truth is not our checker: the hand-written backward is compared with JAX's own
derivative of the plain forward (``jax.vjp`` of ``dense_plain``), which agrees with it
everywhere for the correct function and everywhere but the planted element for the buggy one;
and a backward through ``jax.pure_callback`` is one JAX itself refuses to differentiate."""

from __future__ import annotations

import json
import math
import re
import shlex
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from checks.doors.cli import main

pytestmark = pytest.mark.jax
jax = pytest.importorskip("jax")

README = Path(__file__).resolve().parents[1] / "README.md"

TARGETS = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp
    import numpy as np


    def dense_plain(x, w, b):
        return jnp.tanh(x @ w + b)


    def dense_rule(planted=0.0):
        @jax.custom_vjp
        def dense(x, w, b):
            return dense_plain(x, w, b)

        def fwd(x, w, b):
            y = dense_plain(x, w, b)
            return y, (x, w, y)

        def bwd(res, dy):
            x, w, y = res
            g = dy * (1 - y**2)
            dw = x.T @ g
            if planted:
                dw = dw.at[2, 1].multiply(1 + planted)  # the bug: one element of dw
            return g @ w.T, dw, g.sum(axis=0)

        dense.defvjp(fwd, bwd)
        return dense


    def arguments(n=5, dtype="float64"):
        rng = np.random.default_rng(0)
        return tuple(rng.standard_normal(s).astype(dtype) for s in ((n, 4), (4, 3), (3,)))


    def make(n=5, planted=0.0, dtype="float64"):
        return dense_rule(planted), arguments(n, dtype)


    @jax.custom_vjp
    def tanh(x):
        return jnp.tanh(x)


    def _tanh_bwd(y, g):  # 1 - y**2 through a callback: right, but not differentiable by JAX
        shape = jax.ShapeDtypeStruct(y.shape, y.dtype)
        return (g * jax.pure_callback(lambda y: 1 - np.asarray(y) ** 2, shape, y),)


    tanh.defvjp(lambda x: (jnp.tanh(x), jnp.tanh(x)), _tanh_bwd)


    def callback_bwd():
        return tanh, (np.linspace(-1.5, 1.5, 12).reshape(3, 4),)


    pair = (jnp.sin, [np.linspace(0.0, 1.0, 5)])  # an (f, args) named directly
    x = np.ones((2, 3))


    def args_not_a_tuple():
        return jnp.tanh, x


    def f_not_callable():
        return 1, (x,)


    def no_floating_argument():
        return jnp.sum, (np.arange(3),)
    """
)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jax_targets") / "my_jax.py"
    path.write_text(TARGETS)
    return path


@pytest.fixture(scope="module")
def ns() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "my_jax"}
    exec(compile(TARGETS, "my_jax.py", "exec"), namespace)
    return namespace


def _x64() -> Any:
    return jax.enable_x64(True)


def _vjp_error(ns: dict[str, Any], planted: float) -> list[np.ndarray]:
    """The hand-written backward minus JAX's derivative of the plain forward, per argument."""
    args, dy = ns["arguments"](), np.random.default_rng(1).standard_normal((5, 3))
    with _x64():
        ours = jax.vjp(ns["dense_rule"](planted), *args)[1](dy)
        plain = jax.vjp(ns["dense_plain"], *args)[1](dy)
    return [np.asarray(a) - np.asarray(b) for a, b in zip(ours, plain, strict=True)]


def test_a_correct_custom_vjp_passes_with_its_arguments_names(targets, ns, tmp_path, capsys):
    assert all(np.allclose(e, 0.0, atol=1e-12) for e in _vjp_error(ns, 0.0))  # the oracle
    report = tmp_path / "r.json"
    assert main(["layer", f"{targets}:make", "--json", str(report)]) == 0
    assert "PASS" in capsys.readouterr().out
    doc = json.loads(report.read_text())
    assert doc["ok"] is True
    assert [(t["name"], t["shape"], t["dtype"]) for t in doc["tensors"]] == [
        ("x", [5, 4], "float64"), ("w", [4, 3], "float64"), ("b", [3], "float64"),
    ]  # fmt: skip
    assert doc["reproduce"] == f"python -m checks layer {targets}:make --seed 0"


def test_a_planted_bug_exits_1_naming_the_element_and_the_line_reproduces_it(
    targets, ns, tmp_path, capsys
) -> None:
    err = _vjp_error(ns, 0.01)  # the oracle: only dw[2, 1] differs from JAX's derivative
    assert np.allclose(err[0], 0, atol=1e-12) and np.allclose(err[2], 0, atol=1e-12)
    assert [tuple(i) for i in np.argwhere(np.abs(err[1]) > 1e-12)] == [(2, 1)]
    report = tmp_path / "r.json"
    args = ["layer", f"{targets}:make", "--arg", "planted=0.01", "--coverage", "full"]
    assert main([*args, "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "w[2, 1]" in out and "Hint:" in out
    doc = json.loads(report.read_text())
    assert [(t["name"], t["n_mismatched"], t["worst_index"]) for t in doc["tensors"]
            if not t["ok"]] == [("w", 1, [2, 1])]  # fmt: skip
    line = next(r for r in out.splitlines() if r.startswith("Reproduce: "))
    command = line.removeprefix("Reproduce: ")
    assert command == doc["reproduce"] and "--arg planted=0.01" in command
    assert main(shlex.split(command)[3:]) == 1
    capsys.readouterr()


def test_options_reach_the_jax_door(targets, tmp_path, capsys) -> None:
    """--method, --coverage, --seed, --rtol/--atol and --dtype as for a layer; --html."""
    report, page = tmp_path / "r.json", tmp_path / "r.html"
    args = ["layer", f"{targets}:make", "--method", "central", "--coverage", "sampled",
            "--seed", "3", "--rtol", "1e-5", "--atol", "1e-9", "--dtype", "float32",
            "--json", str(report), "--html", str(page)]  # fmt: skip
    assert main(args) == 0
    doc = json.loads(report.read_text())
    assert (doc["requested_method"], doc["requested_coverage"], doc["seed"]) == (
        "central", "sampled", 3,
    )  # fmt: skip
    assert {(t["dtype"], t["rtol"], t["atol"]) for t in doc["tensors"]} == {("float32", 1e-5, 1e-9)}
    assert "--dtype float32" in doc["reproduce"] and "--method central" in doc["reproduce"]
    assert f"{targets}:make" in page.read_text()
    capsys.readouterr()


def test_order_2_checks_the_backward_and_names_the_cotangent(targets, capsys) -> None:
    assert main(["layer", f"{targets}:make", "--arg", "n=3", "--order", "2"]) == 0
    out = capsys.readouterr().out
    assert "backward of dense" in out and "dy" in out and "PASS" in out


def test_order_2_of_a_backward_jax_cannot_differentiate_fails_with_the_doors_message(
    targets, ns, capsys
) -> None:
    f, (x,) = ns["callback_bwd"]()
    with pytest.raises((ValueError, TypeError)):  # the oracle: JAX itself cannot
        jax.vjp(lambda x, dy: jax.vjp(f, x)[1](dy)[0], x, x)
    assert main(["layer", f"{targets}:callback_bwd"]) == 0  # its first order is right
    capsys.readouterr()
    assert main(["layer", f"{targets}:callback_bwd", "--order", "2"]) == 2
    captured = capsys.readouterr()
    assert "CONTRACT" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "backward of tanh is not differentiable" in err[0]
    assert "jax.pure_callback" in err[0]


def test_an_f_args_pair_named_directly_is_checked(targets, capsys) -> None:
    assert main(["layer", f"{targets}:pair"]) == 0
    assert "PASS" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["{file}:args_not_a_tuple"],
            "returned a pair, not a JAX target (f, args): its second "
            "item, args, must be the tuple of f's positional arguments, got ndarray",
        ),
        (["{file}:f_not_callable"], "its first item, f, is not callable (got int)"),
        (
            ["{file}:x"],
            "is an object of type ndarray, neither a callable factory nor what a "
            "factory returns: a layer (forward, backward, params), a torch nn.Module, or a JAX "
            "target (f, args)",
        ),
        (["{file}:no_floating_argument"], "the arguments of sum hold no floating-point array"),
        (["{file}:pair", "--arg", "n=3"], "is a JAX target (f, args), not a factory"),
        (["{file}:make", "--workers", "2"], "--workers does not apply to a JAX target"),
        (["{file}:make", "--input-shape", "5,4"], "--input-shape does not apply to a JAX target"),
        (["{file}:make", "--input", "x.npy"], "--input does not apply to a JAX target"),
        (["{file}:make", "--max-memory", "1KB"], "give the factory smaller arrays"),
    ],
    ids=[
        "args-not-a-tuple",
        "f-not-callable",
        "an-array",
        "no-floats",
        "arg-to-a-pair",
        "workers",
        "input-shape",
        "input",
        "memory",
    ],
)
def test_what_cannot_be_checked_exits_2_with_one_line(
    args: list[str], message: str, targets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["layer", *(a.format(file=targets) for a in args)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert captured.out == ""


@pytest.mark.parametrize("order", [1, 2])
def test_the_progress_count_is_the_engines_count_of_forward_calls(ns, order, monkeypatch) -> None:
    """The progress bar counts the door's calls, compiled ones too (here every one: a wrapper
    around f would see one call per compilation); the engine counts its own, independently."""
    from checks.doors import jax_eval
    from checks.doors.jax_targets import JaxTarget

    monkeypatch.setattr(jax_eval, "JIT_AFTER", 0)
    original = jax_eval.FlatFunction.forward
    target = JaxTarget(*ns["make"](n=3))
    seen: list[int] = []
    with target.counting(seen.append):
        report = target.check(order=order)
    assert report.ok and seen[-1] == report.n_evals > 0 and seen == sorted(seen)
    assert jax_eval.FlatFunction.forward is original


_ELAPSED = re.compile(r"\(\d+\.\d+ s\)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def _same(printed: list[str], shown: list[str]) -> bool:
    """Line by line, times aside, every number to 6 significant digits (another JAX release
    may round the last digit of a derivative differently); the passing rows' errors are
    rounding, so only their words count."""

    def text(lines: list[str]) -> str:
        lines = [_NUMBER.sub("#", x) if "PASS" in x else x for x in lines]
        return _ELAPSED.sub("", "\n".join(x.rstrip() for x in lines))

    a, b = text(printed), text(shown)
    return _NUMBER.sub("#", a) == _NUMBER.sub("#", b) and all(
        math.isclose(float(x), float(y), rel_tol=1e-6)
        for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b), strict=True)
    )


def test_the_readmes_jax_command_prints_what_the_readme_shows(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    source = re.search(r"```py\n(.*?)```", text, flags=re.DOTALL)
    shown = re.search(r"```console\n\$ (python -m checks layer my_jax.py:make)\n(.*?)```",
                      text, flags=re.DOTALL)  # fmt: skip
    assert source and shown and "the bug" in source.group(1)
    (tmp_path / "my_jax.py").write_text(source.group(1))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")  # the README's width
    assert main(shlex.split(shown.group(1))[3:]) == 1
    printed = capsys.readouterr().out.splitlines()
    expected = shown.group(2).splitlines()
    # the table's rows and the failure message (the title line wraps with the elapsed time)
    start = next(i for i, line in enumerate(expected) if line.startswith("┏"))
    begin = next(i for i, line in enumerate(printed) if line.startswith("┏"))
    assert _same(printed[begin:], expected[start:]), "\n".join(printed)
