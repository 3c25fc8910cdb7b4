"""Seed loops that measure the checker's false alarms and misses on cnn_ref ReLU convs.

Not collected by pytest (too slow for ``make test``); the numbers in the issue notes and the
limitations in docs/limitations.md come from it. Usage::

    python -m property_tests.fuzz_checker small 0 200            # false alarms, x (2,3,8,8)
    python -m property_tests.fuzz_checker pool 0 200             # ... followed by MaxPool2D(2)
    python -m property_tests.fuzz_checker large 0 40             # x (4,4,16,16), K (8,4,3,3)
    python -m property_tests.fuzz_checker huge 0 10              # x (8,8,32,32), K (16,8,3,3)
    python -m property_tests.fuzz_checker detect 0 40            # 1 % in a random dK element
    python -m property_tests.fuzz_checker detect-large 0 20
    python -m property_tests.fuzz_checker large 0 40 --precision native

Every layer is float32 with a ReLU; seed ``t`` draws the layer, ``x`` and the check's seed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import cnn_ref
from checks import GradientMismatchError, check_layer
from property_tests.meta_tests._tiny_layers import Planted

SHAPES = {  # (c_in, c_out, x shape)
    "small": (3, 4, (2, 3, 8, 8)),
    "large": (4, 8, (4, 4, 16, 16)),
    "huge": (8, 16, (8, 8, 32, 32)),
}


def one(kind: str, t: int, precision: str) -> str:
    """``"ok"``, or what went wrong for seed ``t``."""
    size = {"pool": "small", "detect": "small", "detect-large": "large"}.get(kind, kind)
    c_in, c_out, shape = SHAPES[size]
    layer = cnn_ref.Conv2D(c_in, c_out, 3, activation="relu", seed=t, dtype=np.float32)
    x = np.random.default_rng(t).standard_normal(shape).astype(np.float32)
    target: object = cnn_ref.Sequential([layer, cnn_ref.MaxPool2D(2)]) if kind == "pool" else layer
    idx = None
    if kind.startswith("detect"):
        rng = np.random.default_rng(1000 + t)
        x = rng.standard_normal(shape).astype(np.float32)
        idx = tuple(int(i) for i in rng.integers(0, layer.params["K"].shape))
        target = Planted(layer, "K", idx, 0.01)
    try:
        check_layer(target, x, seed=t, precision=precision)
    except GradientMismatchError as exc:
        if idx is None:
            bad = [(tr.name, tr.n_mismatched) for tr in exc.report.tensors if not tr.ok]
            return f"false alarm {bad}"
        return "ok" if exc.report.tensor("K").mismatch[idx] else "caught elsewhere"
    return "missed" if idx is not None else "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "kind", choices=["small", "pool", "large", "huge", "detect", "detect-large"]
    )
    parser.add_argument("lo", type=int)
    parser.add_argument("hi", type=int)
    parser.add_argument("--precision", choices=["auto", "native"], default="auto")
    args = parser.parse_args()
    bad, times = [], []
    for t in range(args.lo, args.hi):
        start = time.perf_counter()
        verdict = one(args.kind, t, args.precision)
        times.append(time.perf_counter() - start)
        if verdict != "ok":
            bad.append((t, verdict))
    n = args.hi - args.lo
    print(
        f"{args.kind} ({args.precision}): {len(bad)} / {n} not ok, median "
        f"{1e3 * float(np.median(times)):.0f} ms per check; {bad[:20]}"
    )


if __name__ == "__main__":
    main()
