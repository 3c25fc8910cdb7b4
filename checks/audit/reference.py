"""``make verify``: the derivation audit, then every reference layer of cnn_ref through the checker.

:func:`verify_command` runs :func:`checks.audit.derivations.audit_command` and then
:func:`checks.check_layer` on each configuration of :data:`REFERENCE_LAYERS` (both convolution
conventions with stride, padding and dilation; sum/mean/max subsampling; the pooling, dense,
activation and flatten layers; a small LeNet-5), and prints one table row per check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from checks.report.errors import GradcheckError
from cnn_ref import (
    Activation,
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    Subsample,
    lenet5,
)

__all__ = [
    "REFERENCE_LAYERS",
    "LayerResult",
    "RefLayer",
    "check_reference_layers",
    "verify_command",
]


def _x(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _tie_free(*shape: int, seed: int = 2) -> np.ndarray:
    size = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(size) - size / 2).reshape(shape) * 0.1


class RefLayer(NamedTuple):
    """One reference-layer check: the layer's name, its configuration, two factories."""

    layer: str
    config: str
    make_layer: Callable[[], Any]
    make_x: Callable[[], np.ndarray]


def _sub(kind: str, **kw: Any) -> Callable[[], Any]:
    def make() -> Any:
        layer = Subsample(3, 2, kind=kind, seed=0, **kw)
        layer.params["beta"][...] = [1.5, -0.7, 0.4]  # beta != 1 on purpose
        return layer

    return make


#: Every check ``make verify`` runs, in the order of its table; a new check is one more entry.
REFERENCE_LAYERS: tuple[RefLayer, ...] = (
    RefLayer(
        "Conv2D",
        "conv 2->3, 3x2, tanh",
        lambda: Conv2D(2, 3, (3, 2), activation="tanh", seed=0),
        lambda: _x(2, 2, 6, 7),
    ),
    RefLayer(
        "Conv2D",
        "conv, stride 2, padding 1",
        lambda: Conv2D(2, 3, 3, stride=2, padding=1, seed=0),
        lambda: _x(2, 2, 7, 8),
    ),
    RefLayer(
        "Conv2D",
        "conv, dilation 2, sigmoid",
        lambda: Conv2D(2, 2, (2, 3), dilation=2, activation="sigmoid", seed=0),
        lambda: _x(2, 2, 7, 8),
    ),
    RefLayer(
        "Conv2D",
        "xcorr 2->3, 3x2",
        lambda: Conv2D(2, 3, (3, 2), convention="xcorr", seed=0),
        lambda: _x(2, 2, 6, 7),
    ),
    RefLayer(
        "Conv2D",
        "xcorr, stride (2,1), pad (1,0), dil (1,2)",
        lambda: Conv2D(
            2,
            3,
            (2, 3),
            stride=(2, 1),
            padding=(1, 0),
            dilation=(1, 2),
            convention="xcorr",
            activation="relu",
            seed=0,
        ),
        lambda: _x(2, 2, 7, 9),
    ),
    RefLayer(
        "Subsample",
        "sum 2x2, beta != 1, sigmoid",
        _sub("sum", activation="sigmoid"),
        lambda: _x(2, 3, 6, 7),
    ),
    RefLayer("Subsample", "mean 2x2, 7x9 map (cropped)", _sub("mean"), lambda: _x(2, 3, 7, 9)),
    RefLayer("Subsample", "max 2x2, tie-free", _sub("max"), lambda: _tie_free(2, 3, 6, 8)),
    RefLayer(
        "Subsample",
        "max 2x2 stride 1 (overlapping)",
        _sub("max", stride=1),
        lambda: _tie_free(2, 3, 5, 6),
    ),
    RefLayer("MaxPool2D", "2x2", lambda: MaxPool2D(2), lambda: _tie_free(2, 2, 6, 6)),
    RefLayer(
        "AvgPool2D",
        "2x3 stride (2,2)",
        lambda: AvgPool2D((2, 3), stride=2),
        lambda: _x(2, 2, 6, 9),
    ),
    RefLayer("Dense", "5->4", lambda: Dense(5, 4, seed=0), lambda: _x(3, 5)),
    RefLayer(
        "Dense", "5->4, tanh", lambda: Dense(5, 4, activation="tanh", seed=0), lambda: _x(3, 5)
    ),
    RefLayer("Activation", "identity", lambda: Activation("identity"), lambda: _x(2, 3, 4)),
    RefLayer("Activation", "sigmoid", lambda: Activation("sigmoid"), lambda: _x(2, 3, 4)),
    RefLayer("Activation", "tanh", lambda: Activation("tanh"), lambda: _x(2, 3, 4)),
    RefLayer("Activation", "relu", lambda: Activation("relu"), lambda: _x(2, 3, 4)),
    RefLayer("Flatten", "(2,3,4,5) -> (2,60)", lambda: Flatten(), lambda: _x(2, 3, 4, 5)),
    RefLayer(
        "lenet5",
        "16x16, 3 classes, sigmoid, mean",
        lambda: lenet5(image_size=16, n_classes=3, seed=0, loss=None),
        lambda: _x(2, 1, 16, 16),
    ),
    RefLayer(
        "lenet5",
        "16x16, xcorr, max, tanh",
        lambda: lenet5(
            image_size=16,
            n_classes=3,
            seed=0,
            loss=None,
            convention="xcorr",
            kind="max",
            activation="tanh",
        ),
        lambda: _x(2, 1, 16, 16),
    ),
)


@dataclass(frozen=True)
class LayerResult:
    """One reference-layer check."""

    layer: str
    config: str
    checked: str  # e.g. "x 84/84, K 18/18, b 3/3"
    max_rel_err: float
    method: str
    coverage: str
    ok: bool
    elapsed: float
    message: str


def _summarise(
    layer: str, config: str, report: Any, ok: bool, elapsed: float, message: str
) -> LayerResult:
    tensors = list(getattr(report, "tensors", []) or [])
    if len(tensors) <= 3:
        checked = ", ".join(f"{t.name} {t.n_checked}/{t.n_total}" for t in tensors)
    else:
        n_checked = sum(int(t.n_checked) for t in tensors)
        n_total = sum(int(t.n_total) for t in tensors)
        checked = f"{len(tensors)} tensors, {n_checked}/{n_total}"
    errs = [float(t.max_rel_err) for t in tensors if np.isfinite(t.max_rel_err)]
    return LayerResult(
        layer,
        config,
        checked,
        max(errs, default=0.0),
        str(getattr(report, "method", "?")),
        str(getattr(report, "coverage", "?")),
        ok,
        elapsed,
        message,
    )


def check_reference_layers(*, seed: int = 0) -> list[LayerResult]:
    """Run :func:`checks.check_layer` on every reference configuration."""
    from checks.doors.api import check_layer

    results = []
    for name, config, make_layer, make_x in REFERENCE_LAYERS:
        start = time.perf_counter()
        try:
            report = check_layer(make_layer(), make_x(), seed=seed)
            results.append(_summarise(name, config, report, True, time.perf_counter() - start, ""))
        except GradcheckError as err:
            results.append(
                _summarise(
                    name,
                    config,
                    err.report,
                    False,
                    time.perf_counter() - start,
                    str(err).splitlines()[0] if str(err) else type(err).__name__,
                )
            )
        except Exception as err:  # the layer or the checker crashed: a failure, with its reason
            results.append(
                LayerResult(
                    name,
                    config,
                    "",
                    float("nan"),
                    "?",
                    "?",
                    False,
                    time.perf_counter() - start,
                    f"{type(err).__name__}: {err}",
                )
            )
    return results


def render_layers(results: list[LayerResult], console: Any) -> None:
    from rich.table import Table

    table = Table(
        title="Reference layers through the checker (float64)", header_style="bold", pad_edge=False
    )
    table.add_column("layer", style="bold", no_wrap=True)
    # the config wraps on a narrow console (never cut)
    table.add_column("config", overflow="fold", ratio=1)
    table.add_column("tensors checked", no_wrap=True)
    table.add_column("max rel err", justify="right", no_wrap=True)
    table.add_column("method", no_wrap=True)
    table.add_column("ok", no_wrap=True)
    for r in results:
        table.add_row(
            r.layer,
            r.config,
            r.checked or r.message,
            f"{r.max_rel_err:.1e}",
            r.method if r.coverage in ("full", "?") else f"{r.method}/{r.coverage}",
            "[green]yes[/]" if r.ok else "[bold red]NO[/]",
        )
    console.print(table)


def verify_command(console: Any, json_path: str | Path | None = None) -> int:
    """``make verify``: the audit, then every reference layer; 0 when both are clean.

    Parameters
    ----------
    console : rich.console.Console
    json_path : path, optional
        Write ``{"audit": [...], "layers": [...]}`` (the audit rows as in
        ``checks.audit.derivations.rows_to_json``; one object per layer check).

    Returns
    -------
    int
        0 when the audit is as documented and every reference layer passes, 1 otherwise.
    """
    from checks.audit.derivations import audit_command, rows_to_json, run_audit

    rows = run_audit()
    audit_rc = audit_command(console, rows=rows)
    results = check_reference_layers()
    render_layers(results, console)
    failed = [r for r in results if not r.ok]
    if json_path is not None:
        payload = {
            "audit": rows_to_json(rows),
            "layers": [
                {**asdict(r), "max_rel_err": r.max_rel_err if np.isfinite(r.max_rel_err) else None}
                for r in results
            ],
        }
        Path(json_path).write_text(json.dumps(payload, indent=2) + "\n")
    for r in failed:
        console.print(f"[bold red]failed[/]: {r.layer} ({r.config}): {r.message}")
    if not failed:
        total = sum(r.elapsed for r in results)
        console.print(
            f"[green]verify ok[/]: {len(results)} reference-layer checks passed ({total:.1f} s)"
        )
    return 1 if (audit_rc or failed) else 0
