"""Shapes, input builders and an independent reference convolution for the benchmarks.

Nothing here imports ``cnn_ref``: the reference below is written from the definition of a
strided, padded, dilated 2-D cross-correlation, so a benchmark that compares ``cnn_ref``'s
result against it checks the benchmarked code against something it does not share code with.
"""

from __future__ import annotations

import os
import platform
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

DTYPES = (np.float32, np.float64)
CONVENTIONS = ("conv", "xcorr")
OPS = ("forward", "backward", "forward+backward")

# The literal path is a loop over (sample, output map, input map) pairs of 2-D conv2 calls;
# above this many pairs one call takes seconds and it is not timed (shapes B and C).
LITERAL_MAX_PAIRS = 10_000


class ConvShape(NamedTuple):
    """One benchmark geometry: (N, C_in, H, W, C_out, k) plus stride/padding/dilation."""

    name: str
    N: int
    C_in: int
    H: int
    W: int
    C_out: int
    k: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        span = self.dilation * (self.k - 1) + 1
        h = (self.H + 2 * self.padding - span) // self.stride + 1
        w = (self.W + 2 * self.padding - span) // self.stride + 1
        return h, w

    @property
    def pairs(self) -> int:
        """Number of 2-D (sample, output map, input map) convolutions in a forward pass."""
        return self.N * self.C_out * self.C_in

    def flops(self, op: str) -> int:
        """Multiply-adds counted as 2 flops: forward 2*N*C_out*H_out*W_out*C_in*kh*kw.

        Backward (dx and dK) is twice the forward count; forward+backward three times.
        """
        h, w = self.out_hw
        fwd = 2 * self.N * self.C_out * h * w * self.C_in * self.k * self.k
        return {"forward": fwd, "backward": 2 * fwd, "forward+backward": 3 * fwd}[op]

    @property
    def label(self) -> str:
        extra = ""
        if self.stride != 1:
            extra += f",s{self.stride}"
        if self.padding:
            extra += f",p{self.padding}"
        if self.dilation != 1:
            extra += f",d{self.dilation}"
        return f"{self.name}({self.N},{self.C_in},{self.H},{self.W},{self.C_out},{self.k}{extra})"

    def smoke(self) -> ConvShape:
        """The same geometry shrunk so that one call of every implementation is quick.

        Used when benchmarking is disabled (plain ``pytest``): the smoke run still checks
        the result, it just does it on a small problem.
        """
        span = self.dilation * (self.k - 1) + 1
        hw = max(span + self.stride, min(self.H, 10))
        return self._replace(
            N=min(self.N, 2), C_in=min(self.C_in, 3), C_out=min(self.C_out, 4), H=hw, W=hw
        )


SHAPES = (
    ConvShape("A", 32, 3, 32, 32, 16, 5),
    ConvShape("B", 32, 64, 32, 32, 64, 3),
    ConvShape("C", 8, 128, 28, 28, 128, 3),
    ConvShape("D", 1, 1, 28, 28, 6, 5),
    ConvShape("S", 8, 32, 32, 32, 32, 3, stride=2),
    ConvShape("P", 8, 32, 32, 32, 32, 3, padding=1),
)
SHAPES_BY_NAME = {s.name: s for s in SHAPES}


def dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def make_conv_case(shape: ConvShape, dtype: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs x, K, b and an upstream gradient dy (the delta dJ/dU) of ``shape``."""
    rng = np.random.default_rng(seed)
    h, w = shape.out_hw
    fan_in = shape.C_in * shape.k * shape.k
    return {
        "x": rng.standard_normal((shape.N, shape.C_in, shape.H, shape.W)).astype(dtype),
        "K": (
            rng.standard_normal((shape.C_out, shape.C_in, shape.k, shape.k)) / fan_in**0.5
        ).astype(dtype),
        "b": rng.standard_normal(shape.C_out).astype(dtype),
        "dy": rng.standard_normal((shape.N, shape.C_out, h, w)).astype(dtype),
    }


def _windows(shape: ConvShape, i: int, j: int) -> tuple[slice, slice]:
    h, w = shape.out_hw
    s, d = shape.stride, shape.dilation
    return (
        slice(i * d, i * d + s * (h - 1) + 1, s),
        slice(j * d, j * d + s * (w - 1) + 1, s),
    )


def _pad(x: np.ndarray, p: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x


def reference_forward(
    x: np.ndarray, K: np.ndarray, b: np.ndarray, shape: ConvShape, convention: str
) -> np.ndarray:
    """u[n,o] = b[o] + sum_c sum_ij x_pad[n,c, s*h + d*i, s*w + d*j] * K'[o,c,i,j] in float64.

    ``K' = K`` for cross-correlation and ``K' = rot180(K)`` for true convolution.
    """
    Ke = np.asarray(K, np.float64)
    if convention == "conv":
        Ke = Ke[..., ::-1, ::-1]
    xp = _pad(np.asarray(x, np.float64), shape.padding)
    h, w = shape.out_hw
    u = np.zeros((x.shape[0], K.shape[0], h, w))
    for i in range(shape.k):
        for j in range(shape.k):
            si, sj = _windows(shape, i, j)
            u += np.einsum("nchw,oc->nohw", xp[:, :, si, sj], Ke[:, :, i, j], optimize=True)
    return u + np.asarray(b, np.float64)[None, :, None, None]


def reference_backward(
    dy: np.ndarray, x: np.ndarray, K: np.ndarray, shape: ConvShape, convention: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dK, db) of :func:`reference_forward` in float64: the adjoint, offset by offset."""
    Ke = np.asarray(K, np.float64)
    if convention == "conv":
        Ke = Ke[..., ::-1, ::-1]
    dy64 = np.asarray(dy, np.float64)
    xp = _pad(np.asarray(x, np.float64), shape.padding)
    dxp = np.zeros_like(xp)
    dKe = np.zeros_like(Ke)
    for i in range(shape.k):
        for j in range(shape.k):
            si, sj = _windows(shape, i, j)
            dxp[:, :, si, sj] += np.einsum("nohw,oc->nchw", dy64, Ke[:, :, i, j], optimize=True)
            dKe[:, :, i, j] = np.einsum("nohw,nchw->oc", dy64, xp[:, :, si, sj], optimize=True)
    p = shape.padding
    dx = dxp[:, :, p : p + x.shape[2], p : p + x.shape[3]] if p else dxp
    if convention == "conv":
        dKe = dKe[..., ::-1, ::-1]
    return dx, dKe, dy64.sum(axis=(0, 2, 3))


def assert_matches_reference(
    name: str,
    got: Any,
    ref: np.ndarray,
    ref_abs: np.ndarray,
    n_terms: int,
    dtype: Any,
    normwise: bool = False,
) -> None:
    """Assert ``|got - ref| <= n_terms * eps(dtype) * ref_abs`` elementwise (plus a tiny floor).

    ``ref_abs`` is the same reduction computed on absolute values, so the bound is the
    classic worst-case rounding bound of a sum of ``n_terms`` products (Higham, gamma_n): a
    correct implementation cannot exceed it, and a wrong one (flipped kernel, off-by-one
    window, missing term) misses it by orders of magnitude. ``normwise=True`` adds
    ``n_terms * eps * max(ref_abs)`` for FFT-based peers, whose rounding error is bounded
    relative to the norm of the result, not element by element.
    """
    __tracebackhide__ = True
    got = np.asarray(got)
    if got.shape != ref.shape:
        raise AssertionError(f"{name}: shape {got.shape}, reference {ref.shape}")
    if got.dtype != np.dtype(dtype):
        raise AssertionError(f"{name}: dtype {got.dtype}, expected {np.dtype(dtype)}")
    eps = float(np.finfo(dtype).eps)
    tol = (n_terms + 2) * eps * ref_abs + 1e-300
    if normwise:
        tol = tol + (n_terms + 2) * eps * float(ref_abs.max(initial=0.0))
    err = np.abs(got.astype(np.float64) - ref)
    bad = err > tol
    if bad.any():
        worst = np.unravel_index(int(np.argmax(err - tol)), err.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())} / {bad.size} elements differ from the float64 reference "
            f"beyond the rounding bound; worst at {worst}: got {got[worst]!r}, "
            f"reference {ref[worst]!r}, bound {tol[worst]:.3g}"
        )


class ConvReference:
    """Reference outputs (and their absolute-value bounds) for one case, computed lazily once."""

    def __init__(
        self,
        case: dict[str, np.ndarray],
        shape: ConvShape,
        convention: str,
        normwise: bool = False,
    ) -> None:
        self.case, self.shape, self.convention = case, shape, convention
        self.normwise = normwise
        self._fwd: tuple[np.ndarray, np.ndarray] | None = None
        self._bwd: tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]] | None = None

    def check_forward(self, u: Any) -> None:
        __tracebackhide__ = True
        c, s = self.case, self.shape
        if self._fwd is None:
            ref = reference_forward(c["x"], c["K"], c["b"], s, self.convention)
            ref_abs = reference_forward(
                np.abs(c["x"]), np.abs(c["K"]), np.abs(c["b"]), s, self.convention
            )
            self._fwd = (ref, ref_abs)
        assert_matches_reference("u", u, *self._fwd, s.C_in * s.k * s.k + 1, c["x"].dtype)

    def check_backward(self, grads: Any) -> None:
        __tracebackhide__ = True
        c, s = self.case, self.shape
        if self._bwd is None:
            self._bwd = (
                reference_backward(c["dy"], c["x"], c["K"], s, self.convention),
                reference_backward(
                    np.abs(c["dy"]), np.abs(c["x"]), np.abs(c["K"]), s, self.convention
                ),
            )
        h, w = s.out_hw
        n_terms = {"dx": s.C_out * s.k * s.k, "dK": s.N * h * w, "db": s.N * h * w}
        refs, ref_abss = self._bwd
        for name, got, ref, ref_abs in zip(("dx", "dK", "db"), grads, refs, ref_abss, strict=True):
            assert_matches_reference(
                name, got, ref, ref_abs, n_terms[name], c["x"].dtype, self.normwise
            )


_last_backend: list[str] = [""]


def peak_memory(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Peak bytes newly allocated (as numpy reports them to tracemalloc) during ``fn()``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, out


def settle(backend: str, smoke: bool, seconds: float = 0.5) -> None:
    """Sleep briefly when the benchmarks switch between numpy and torch.

    OpenBLAS and torch's OpenMP pool each keep their worker threads spinning for a while
    after a call; on 2 cores the first calls of the other library then fight them for the
    cores. A short sleep at each switch lets the idle pool park first. No sleep in smoke
    runs, where nothing is timed.
    """
    if smoke:
        return
    if _last_backend[0] and _last_backend[0] != backend:
        time.sleep(seconds)
    _last_backend[0] = backend


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, numpy/BLAS and torch versions, for the report's machine section."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import threadpoolctl

        info["blas"] = [
            {k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for p in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        try:
            deps = np.show_config(mode="dicts")["Build Dependencies"]
            info["blas"] = [
                {"internal_api": deps["blas"].get("name"), "version": deps["blas"].get("version")}
            ]
        except Exception:  # only descriptive; older numpy has no dict mode
            info["blas"] = []
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            info.setdefault("env", {})[var] = os.environ[var]
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    try:
        import mygrad

        info["mygrad"] = mygrad.__version__
    except ImportError:
        info["mygrad"] = None
    try:
        import scipy

        info["scipy"] = scipy.__version__
    except ImportError:
        info["scipy"] = None
    return info
