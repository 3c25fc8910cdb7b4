"""``make verify``: the audit plus every reference layer through the checker, and its JSON."""

from __future__ import annotations

import json

from rich.console import Console

from checks.audit.reference import verify_command


def test_verify_passes_and_writes_audit_and_layer_json(tmp_path):
    console = Console(record=True, width=140)
    path = tmp_path / "verify.json"
    assert verify_command(console, json_path=path) == 0
    text = console.export_text()
    assert "audit ok" in text and "verify ok" in text
    data = json.loads(path.read_text())
    assert {r["equation"] for r in data["audit"]} >= {"14", "18", "10/11", "20"}
    layers = {(r["layer"], r["config"]) for r in data["layers"]}
    assert {name for name, _ in layers} >= {
        "Conv2D",
        "Subsample",
        "MaxPool2D",
        "AvgPool2D",
        "Dense",
        "Activation",
        "Flatten",
        "lenet5",
    }
    assert sum(name == "Conv2D" and "xcorr" in cfg for name, cfg in layers) >= 2
    assert all(r["ok"] and r["max_rel_err"] < 1e-4 for r in data["layers"])
