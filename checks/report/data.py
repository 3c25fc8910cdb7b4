"""What a gradient check found: :class:`Report` and one :class:`TensorReport` per tensor.

The numerical core fills these; the front door (messages, hints, plots, the pytest plugin, the
CLI) only reads them. Field names are a contract (see ``docs/ARCHITECTURE.md``).

JSON schema (``Report.to_json()``, ``schema_version`` 1)
--------------------------------------------------------
A single object::

    {
      "schema_version": 1,
      "ok": bool,
      "layer_name": str,
      "method": str,            # resolved method: "complex", "richardson", "central",
                                # or "mixed(x=complex, K=richardson)"
      "requested_method": str,  # what the caller asked for ("auto", ...)
      "coverage": str,          # resolved coverage: "full", "sampled", "projected",
                                # "sampled+projected"
      "requested_coverage": str,
      "seed": int,
      "n_evals": int,           # forward calls made by the numerical part
      "elapsed": float,         # seconds
      "batching": str,          # how perturbations of x were evaluated
      "precision": str,         # float type of the finite differences, and why
      "problems": [str],        # contract / NaN findings, one line each
      "kinks": [[tensor_name, [i0, i1, ...]]],
      "reproduce": str,         # one-line reproduction
      "notes": [str],           # what a front door adds (an output it did not check, ...)
      "tensors": [              # one per checked tensor, "x" first, then params in order
        {
          "name": str, "shape": [int], "dtype": str, "method": str,
          "n_checked": int, "n_total": int, "fraction_checked": float,
          "n_mismatched": int,
          "max_abs_err": float|null, "max_rel_err": float|null,
          "worst_index": [int]|null,
          "atol": float|null, "rtol": float|null, "tolerance_rule": str,
          "ok": bool,
          "nonfinite": {"analytic": [[int]], "numerical": [[int]]},
          "kinks": [[int]],
          "projections": [[analytic, numerical, tol]],
          "tied": [{"elements": [[int]], "value": float, "analytic": float,
                    "numerical": float, "tol": float, "ok": bool}],
          "located": {"tests": int, "unchecked": int, "suspects": int,
                      "mismatched": int} | null,
          "worst": [               # up to 10 worst checked elements, worst first
            {"index": [int], "analytic": float, "numerical": float,
             "abs_err": float, "rel_err": float, "tol": float, "error_estimate": float}
          ]
        }
      ]
    }

Non-finite floats are written as ``null``. Full arrays are not serialised (they can be large);
use the ``TensorReport`` arrays in Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SCHEMA_VERSION", "Report", "TensorReport"]

SCHEMA_VERSION = 1
_N_WORST_JSON = 10


def _f(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


#: How a Report renders itself: ``"text"`` (``str(report)``) and ``"plot"`` (``report.plot``),
#: filled in by :mod:`checks.report` with :func:`checks.report.messages.format_report` and
#: :func:`checks.report.plotting.plot_report`. Those read this module; this module imports
#: neither, so the report layer has no import cycle.
RENDERERS: dict[str, Callable[..., Any]] = {}


def order_with_ties(key: np.ndarray, spread: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Flat ``positions`` sorted by ``key`` (largest first), near-ties by position.

    Keys closer than the sum of their ``spread`` (an error estimate), chained, form one tie;
    within a tie the smaller flat index comes first. Never by the last bits of the keys.
    """
    if positions.size == 0:
        return positions.astype(np.intp)
    k = key.reshape(-1)[positions]
    sp = spread.reshape(-1)[positions]
    o = np.argsort(-k, kind="stable")
    ks, ss = k[o], sp[o]
    with np.errstate(invalid="ignore"):
        gap = ks[:-1] - ks[1:]
        # a relative floor: keys equal to ~12 digits are tied even with no estimate
        new = ~(gap <= ss[:-1] + ss[1:] + 1e-12 * np.abs(ks[:-1]))
    tie = np.concatenate([[0], np.cumsum(new)])
    return positions[o][np.lexsort((positions[o], tie))]


def _empty() -> np.ndarray:
    return np.zeros((0,))


@dataclass
class TensorReport:
    """The check of one tensor (``x``, a parameter, or ``inputs[i]`` for ``check_vjp``).

    Attributes
    ----------
    name : str
        ``"x"``, a key of ``layer.params``, or ``"inputs[i]"``.
    shape : tuple of int
    dtype : str
        dtype of the tensor as given (e.g. ``"float32"``).
    n_checked, n_total : int
        Elements compared one by one / elements in the tensor.
    n_mismatched : int
        Checked elements whose error exceeds their tolerance (kinks excluded).
    max_abs_err, max_rel_err : float
        Over checked, finite, non-kink elements; ``rel = abs / max(|analytic|, |numerical|)``.
    worst_index : tuple of int or None
        Multi-index of the mismatched element with the largest absolute error (when nothing
        mismatches: of the element with the largest ``abs_err / tol``).
    atol, rtol : float or None
        Explicit overrides when the caller gave them, else ``None`` (tolerance from estimates).
    tolerance_rule : str
        In words: how ``tol`` was derived.
    ok : bool
    analytic : ndarray
        The layer's gradient (float64 copy, full shape).
    numerical : ndarray
        Finite-difference gradient; NaN where not checked.
    error_estimate : ndarray
        Estimated error of ``numerical`` (truncation + rounding); NaN where not checked.
    tol : ndarray
        Allowed ``|analytic - numerical|`` per element; NaN where not checked.
    mismatch : ndarray of bool
    checked : ndarray of bool
    projections : list of (float, float, float)
        ``(<analytic, v>, numerical directional derivative, tol)`` per random direction v.
    tied : list of dict
        Kinked elements of equal value judged together along their common direction ``v``
        (ones on the set): ``{"elements": [index, ...], "value", "analytic" (<analytic, v>),
        "numerical", "tol", "ok"}``. Each element of a tied maximum can look like a valid
        subgradient on its own while the gradient sends dy to all of them.
    located : dict or None
        When a random projection failed, how its wrong elements were found by group testing:
        ``{"tests", "unchecked", "suspects", "mismatched"}`` (directional tests made, elements
        that were unchecked, suspects then evaluated one by one, of them mismatched).
    kinks : list of tuple of int
        Elements judged non-differentiable where the analytic value is a valid subgradient.
    method : str
        Method actually used for this tensor.
    nonfinite : dict
        ``{"analytic": [index, ...], "numerical": [index, ...]}``: NaN/Inf by side.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    n_checked: int = 0
    n_total: int = 0
    n_mismatched: int = 0
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    worst_index: tuple[int, ...] | None = None
    atol: float | None = None
    rtol: float | None = None
    tolerance_rule: str = ""
    ok: bool = True
    analytic: np.ndarray = field(default_factory=_empty, repr=False)
    numerical: np.ndarray = field(default_factory=_empty, repr=False)
    error_estimate: np.ndarray = field(default_factory=_empty, repr=False)
    tol: np.ndarray = field(default_factory=_empty, repr=False)
    mismatch: np.ndarray = field(default_factory=_empty, repr=False)
    checked: np.ndarray = field(default_factory=_empty, repr=False)
    projections: list[tuple[float, float, float]] = field(default_factory=list)
    tied: list[dict[str, Any]] = field(default_factory=list)
    located: dict[str, int] | None = None
    kinks: list[tuple[int, ...]] = field(default_factory=list)
    method: str = ""
    nonfinite: dict[str, list[tuple[int, ...]]] = field(
        default_factory=lambda: {"analytic": [], "numerical": []}
    )

    @property
    def fraction_checked(self) -> float:
        """Elements checked one by one, as a fraction of the tensor."""
        return self.n_checked / self.n_total if self.n_total else 1.0

    def worst(self, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` worst checked elements: mismatches first, by absolute error, then the
        others by ``abs_err / tol``. Values closer than their error estimates cannot be told
        apart (a rot180 pair's errors are equal but for rounding): those are listed by index,
        so the list does not depend on the last bits of a BLAS result."""
        if self.checked.size == 0 or not self.checked.any():
            return []
        a = self.analytic
        n = self.numerical
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.abs(a - n)
            ratio = np.where(self.checked & np.isfinite(err), err / self.tol, -np.inf)
            est = np.nan_to_num(np.abs(self.error_estimate), nan=0.0, posinf=0.0)
            est_ratio = np.nan_to_num(est / self.tol, nan=0.0, posinf=0.0)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        bad = self.mismatch if self.mismatch.shape == a.shape else np.zeros(a.shape, bool)
        bad = bad & self.checked
        err_key = np.where(np.isfinite(err), err, np.inf)
        kmax = min(k, int(self.checked.sum()))
        order = np.concatenate(
            [
                order_with_ties(err_key, est, np.flatnonzero(bad)),
                order_with_ties(ratio, est_ratio, np.flatnonzero(self.checked & ~bad)),
            ]
        )[:kmax]
        out = []
        for i in order:
            idx = tuple(int(j) for j in np.unravel_index(int(i), self.shape))
            ai, ni = float(a[idx]), float(n[idx])
            ae = abs(ai - ni)
            denom = max(abs(ai), abs(ni))
            out.append(
                {
                    "index": idx,
                    "analytic": ai,
                    "numerical": ni,
                    "abs_err": ae,
                    "rel_err": ae / denom if denom > 0 else 0.0,
                    "tol": float(self.tol[idx]),
                    "error_estimate": float(self.error_estimate[idx]),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see the module docstring for the schema)."""
        return {
            "name": self.name,
            "shape": [int(s) for s in self.shape],
            "dtype": self.dtype,
            "method": self.method,
            "n_checked": int(self.n_checked),
            "n_total": int(self.n_total),
            "fraction_checked": float(self.fraction_checked),
            "n_mismatched": int(self.n_mismatched),
            "max_abs_err": _f(self.max_abs_err),
            "max_rel_err": _f(self.max_rel_err),
            "worst_index": list(self.worst_index) if self.worst_index is not None else None,
            "atol": _f(self.atol),
            "rtol": _f(self.rtol),
            "tolerance_rule": self.tolerance_rule,
            "ok": bool(self.ok),
            "nonfinite": {k: [list(i) for i in v] for k, v in self.nonfinite.items()},
            "kinks": [list(i) for i in self.kinks],
            "projections": [[_f(a), _f(n), _f(t)] for a, n, t in self.projections],
            "located": self.located,
            "tied": [{**d, "elements": [list(i) for i in d["elements"]]} for d in self.tied],
            "worst": [
                {k: (list(v) if k == "index" else _f(v)) for k, v in w.items()}
                for w in self.worst(_N_WORST_JSON)
            ],
        }


@dataclass
class Report:
    """The result of :func:`checks.check_layer` or :func:`checks.check_vjp`.

    Attributes
    ----------
    ok : bool
        True when every tensor matched and no contract problem was found.
    tensors : list of TensorReport
    kinks : list of (str, tuple of int)
        ``(tensor_name, index)`` judged non-differentiable (analytic value accepted as a
        subgradient).
    method, coverage : str
        Resolved method and coverage.
    seed : int
    layer_name : str
    n_evals : int
        Forward calls made by the numerical part.
    elapsed : float
        Seconds.
    problems : list of str
        Contract and NaN/Inf findings, one line each.
    requested_method, requested_coverage : str
        What the caller asked for (used in the reproduction line).
    batching : str
        How perturbations of ``x`` were evaluated (packed along ``batch_axis`` or one call per
        probe, and why).
    precision : str
        The floating type the finite differences were computed in, and why: ``"float64
        (...)"`` for a float32/float16 layer whose forward the precision probe showed to follow
        float64 copies, else ``"native <dtype>"``.
    requested_precision : str
    notes : list of str
        What a front door adds to the verdict, one line each (an output it did not check,
        a function it could not compile); printed with the report, never a failure.
    """

    ok: bool = True
    tensors: list[TensorReport] = field(default_factory=list)
    kinks: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    method: str = "auto"
    coverage: str = "auto"
    seed: int = 0
    layer_name: str = ""
    n_evals: int = 0
    elapsed: float = 0.0
    problems: list[str] = field(default_factory=list)
    requested_method: str = "auto"
    requested_coverage: str = "auto"
    batching: str = ""
    entry: str = "check_layer"
    precision: str = ""
    requested_precision: str = "auto"
    #: how the check was started, when a front door knows it better than ``check_layer(...)``
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def tensor(self, name: str) -> TensorReport:
        """The :class:`TensorReport` called ``name`` (KeyError naming the choices otherwise)."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"no tensor {name!r} in report; tensors: {[t.name for t in self.tensors]}")

    @property
    def reproduce(self) -> str:
        """A one-line reproduction of this check (``command`` when a front door set one: the
        command line gives its own, runnable as it stands)."""
        if self.command:
            return self.command
        extra = (
            f", precision={self.requested_precision!r}"
            if self.requested_precision != "auto"
            else ""
        )
        return (
            f"{self.entry}({self.layer_name or 'layer'}, ..., seed={self.seed}, "
            f"method={self.requested_method!r}, coverage={self.requested_coverage!r}{extra})"
        )

    def __str__(self) -> str:
        return RENDERERS["text"](self)

    def to_json(self, **dumps_kwargs: Any) -> str:
        """Serialise to JSON following the schema in the module docstring."""
        return json.dumps(self.to_dict(), **dumps_kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The dict behind :meth:`to_json`."""
        return {
            "schema_version": SCHEMA_VERSION,
            "ok": bool(self.ok),
            "layer_name": self.layer_name,
            "method": self.method,
            "requested_method": self.requested_method,
            "coverage": self.coverage,
            "requested_coverage": self.requested_coverage,
            "seed": int(self.seed),
            "n_evals": int(self.n_evals),
            "elapsed": float(self.elapsed),
            "batching": self.batching,
            "precision": self.precision,
            "problems": list(self.problems),
            "kinks": [[n, list(i)] for n, i in self.kinks],
            "reproduce": self.reproduce,
            "notes": list(self.notes),
            "tensors": [t.to_dict() for t in self.tensors],
        }

    def plot(self, path: str) -> None:
        """Write a PNG heatmap of the per-element error of each failing tensor to ``path``.

        Delegates to :func:`checks.report.plotting.plot_report` (needs matplotlib).
        """
        RENDERERS["plot"](self, path)
