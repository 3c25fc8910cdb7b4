"""python -m checks layer with torch targets: a factory (or an instance) that gives an
nn.Module is checked through checks.torch.check_module; --order 2 checks its double backward.
The planted bug is known by construction (checks.audit.torch_functions: 1 % in dW[2, 1, 0, 2])."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from checks.doors.cli import main

pytestmark = pytest.mark.torch
pytest.importorskip("torch")

MODULES = textwrap.dedent(
    """
    import torch
    from checks.audit.torch_functions import SmallCNN


    def good():
        return SmallCNN()


    def bad():
        return SmallCNN("dw_one_element")


    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    """
)


@pytest.fixture
def modules_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_modules.py"
    path.write_text(MODULES)
    return path


def test_a_module_factory_passes_with_its_parameter_names_in_its_dtype(
    modules_file: Path, tmp_path: Path, capsys
) -> None:
    report = tmp_path / "r.json"
    args = ["layer", f"{modules_file}:good", "--input-shape", "2,3,6,6", "--json", str(report)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "conv.weight" in out and "fc.bias" in out
    doc = json.loads(report.read_text())
    assert [t["name"] for t in doc["tensors"]] == [
        "x", "conv.weight", "conv.bias", "fc.weight", "fc.bias",
    ]  # fmt: skip
    assert {t["dtype"] for t in doc["tensors"]} == {"float32"}  # the module's own dtype


def test_a_buggy_module_exits_1_locating_the_element_with_a_reproduce_line(
    modules_file: Path, capsys
) -> None:
    args = ["layer", f"{modules_file}:bad", "--input-shape", "2,3,6,6", "--dtype", "float64"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "conv.weight[2, 1, 0, 2]" in out and "MISMATCH" in out
    assert f"Reproduce: python -m checks layer {modules_file}:bad" in out


def test_order_2_checks_the_double_backward_of_a_module_instance(
    modules_file: Path, capsys
) -> None:
    assert main(["layer", f"{modules_file}:net", "--input-shape", "5,4", "--order", "2"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "dy" in out and "0.weight" in out


def test_order_2_of_a_numpy_layer_and_a_rejected_shape_exit_2_with_one_line(
    modules_file: Path, capsys
) -> None:
    assert main(["layer", "cnn_ref:Flatten", "--input-shape", "2,3,2,2", "--order", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--order 2 needs a torch nn.Module" in err[0]
    assert main(["layer", f"{modules_file}:net", "--input-shape", "5,5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rejected an input of shape (5, 5)" in err[0]
