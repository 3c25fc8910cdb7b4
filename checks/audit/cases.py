"""One random case per audited claim: the form's error against finite differences.

Each ``case_*`` function takes the parameters of a row of the audit table
(:data:`checks.audit.specs.SPECS`) and returns ``case(rng) -> float``: draw a random geometry and
values, evaluate the form (:mod:`checks.audit.forms`) and return its largest error relative to
the gradient's scale, from central differences of the independent forward model
(:mod:`checks.audit.model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from checks.audit.forms import (
    cnn_signal,
    eq10_conv_delta,
    eq13_kernel_grad,
    eq14_kernel_grad,
    eq18_input_delta,
    eq20_beta_grad,
)
from checks.audit.model import ACT, conv_def, down_def, numerical_grad, rel_err

__all__ = [
    "CaseFn",
    "case_conv_params",
    "case_dense",
    "case_eq1",
    "case_eq1_strided",
    "case_eq3",
    "case_eq8",
    "case_eq10",
    "case_eq18",
    "case_net",
    "case_subsample_params",
]

#: ``case(rng) -> max relative error`` of one form on one random draw.
CaseFn = Callable[[np.random.Generator], float]


# --------------------------------------------------------------------------- geometry draws


@dataclass(frozen=True)
class _ConvGeom:
    c_in: int
    c_out: int
    h: int
    w: int
    kh: int
    kw: int


def _conv_geom(
    rng: np.random.Generator, c_in: int | None = None, c_out: int | None = None, extra: int = 0
) -> _ConvGeom:
    # non-square maps, non-square kernels, N_in != N_out unless asked otherwise
    if c_in is None:
        c_in = int(rng.integers(2, 4))
    if c_out is None:
        c_out = c_in + 1
    kh, kw = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    h = kh + int(rng.integers(2, 5)) + extra
    w = h + 1 + int(rng.integers(0, 3))
    return _ConvGeom(c_in, c_out, h, w, kh, kw)


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape)


def _tie_free(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Values whose gaps exceed 1e-3, so no finite-difference step crosses a max tie."""
    size = int(np.prod(shape))
    vals = (rng.permutation(size) - size / 2) * 0.05 + rng.uniform(-0.01, 0.01, size)
    return vals.reshape(shape)


def _beta(rng: np.random.Generator, c: int) -> np.ndarray:
    return rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c)


# --------------------------------------------------------------------------- cases


def _vjp_err(formula: np.ndarray, j: Callable[[np.ndarray], float], theta: np.ndarray) -> float:
    return rel_err(formula, numerical_grad(j, theta))


def case_eq1(convention: str, form: str) -> CaseFn:
    def case(rng: np.random.Generator) -> float:
        sg = cnn_signal()
        g = _conv_geom(rng)
        a, k = _normal(rng, g.c_in, g.h, g.w), _normal(rng, g.c_out, g.c_in, g.kh, g.kw)
        bij = _normal(rng, g.c_out, g.c_in)  # the derivation's per-pair biases
        ref = conv_def(a, k, bij.sum(axis=1), convention)
        u = np.zeros_like(ref)
        for i in range(g.c_out):
            for j in range(g.c_in):
                kij = k[i, j] if form == "as-written" else _kernel_for(convention, k[i, j])
                u[i] += sg.conv2(a[j], kij, "valid") + bij[i, j]  # (1)
        return rel_err(u, ref)

    return case


def _kernel_for(convention: str, kij: np.ndarray) -> np.ndarray:
    # a framework's conv2d (xcorr) equals conv2 with the kernel rotated
    return kij if convention == "conv" else cnn_signal().rot180(kij)


def case_eq1_strided(rng: np.random.Generator) -> float:
    sg = cnn_signal()
    g = _conv_geom(rng, extra=2)
    s, p = (2, 3), (1, 2)
    a, k, b = (
        _normal(rng, g.c_in, g.h, g.w),
        _normal(rng, g.c_out, g.c_in, g.kh, g.kw),
        _normal(rng, g.c_out),
    )
    ref = conv_def(a, k, b, "conv", s, p)
    ap = np.pad(a, [(0, 0), (p[0],) * 2, (p[1],) * 2])
    u = np.stack(
        [
            sum(sg.conv2(ap[j], k[i, j], "valid")[:: s[0], :: s[1]] for j in range(g.c_in)) + b[i]
            for i in range(g.c_out)
        ]
    )
    return rel_err(u, ref)


def case_eq3(kind: str) -> CaseFn:
    def case(rng: np.random.Generator) -> float:
        sg = cnn_signal()
        c, n = 3, int(rng.integers(2, 4))
        a = _tie_free(rng, c, 2 * n + 1, 3 * n + 2)  # not divisible by n: cropped borders
        beta, b = _beta(rng, c), _normal(rng, c)
        u = np.stack([beta[i] * sg.down(a[i], n, kind) + b[i] for i in range(c)])  # (3)
        return rel_err(u, beta[:, None, None] * down_def(a, n, kind) + b[:, None, None])

    return case


def case_dense(eq: str, batch: bool) -> CaseFn:
    def case(rng: np.random.Generator) -> float:
        n_in, n_out = int(rng.integers(3, 7)), int(rng.integers(2, 5))
        n = int(rng.integers(2, 5)) if batch else 1
        x, w, b = _normal(rng, n, n_in), _normal(rng, n_out, n_in), _normal(rng, n_out)
        delta = _normal(rng, n, n_out)
        if eq == "5":
            # (5) delta (x)^T, with samples as columns: delta^T is (out, N), x^T is (in, N)
            formula = delta.T @ x if batch else np.outer(delta[0], x[0])
            return _vjp_err(formula, lambda t: float(np.sum(delta * (x @ t.T + b))), w)
        formula = delta.sum(axis=0)  # (6), summed over the samples of a batch
        return _vjp_err(formula, lambda t: float(np.sum(delta * (x @ w.T + t))), b)

    return case


def case_eq8(act: str) -> CaseFn:
    f, df = ACT[act]

    def case(rng: np.random.Generator) -> float:
        u = _normal(rng, 2, 4, 5)
        u = np.where(np.abs(u) < 0.05, u + 0.1, u)  # away from relu's kink
        g = _normal(rng, 2, 4, 5)  # dJ/dA
        return _vjp_err(g * df(u), lambda t: float(np.sum(g * f(t))), u)  # (8)/(16)

    return case


def case_eq10(kind: str, form: str) -> CaseFn:
    f, df = ACT["tanh"]

    def case(rng: np.random.Generator) -> float:
        c, n = 2, int(rng.integers(2, 4))
        h, w = 2 * n + int(rng.integers(0, n)), 3 * n + int(rng.integers(0, n))
        u = _tie_free(rng, c, h, w) * 0.5
        beta, b = _beta(rng, c), _normal(rng, c)
        delta_next = _normal(rng, c, h // n, w // n)

        def j(t: np.ndarray) -> float:
            return float(
                np.sum(
                    delta_next * (beta[:, None, None] * down_def(f(t), n, kind) + b[:, None, None])
                )
            )

        formula = eq10_conv_delta(delta_next, beta, n, kind, f(u), df(u), form)
        return _vjp_err(formula, j, u)

    return case


def case_conv_params(
    eq: str,
    convention: str,
    form: str,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    batch: bool = False,
    dilation: tuple[int, int] = (1, 1),
) -> CaseFn:
    geo = (stride, padding, dilation)

    def case(rng: np.random.Generator) -> float:
        g = _conv_geom(rng, extra=2 * max(*stride, *dilation) - 2)
        n = int(rng.integers(2, 4)) if batch else 1
        a, k, b = (
            _normal(rng, n, g.c_in, g.h, g.w),
            _normal(rng, g.c_out, g.c_in, g.kh, g.kw),
            _normal(rng, g.c_out),
        )
        u = conv_def(a, k, b, convention, *geo)
        delta = _normal(rng, *u.shape)
        if eq == "12":
            formula = delta.sum(axis=(0, 2, 3))  # (12), and over the samples of a batch
            return _vjp_err(
                formula,
                lambda t: float(np.sum(delta * conv_def(a, k, t, convention, *geo))),
                b,
            )
        if eq == "13":
            formula = eq13_kernel_grad(a[0], delta[0], (g.kh, g.kw), convention, form)
        else:
            formula = sum(
                eq14_kernel_grad(a[m], delta[m], (g.kh, g.kw), convention, form, *geo)
                for m in range(n)
            )
        return _vjp_err(
            formula,
            lambda t: float(np.sum(delta * conv_def(a, t, b, convention, *geo))),
            k,
        )

    return case


def case_eq18(
    convention: str,
    form: str,
    c_l: int,
    c_next: int,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> CaseFn:
    f, df = ACT["sigmoid"]
    geo = (stride, padding, dilation)

    def case(rng: np.random.Generator) -> float:
        g = _conv_geom(rng, c_l, c_next, extra=2 * max(*stride, *dilation) - 2)
        u = _normal(rng, c_l, g.h, g.w)  # U^l of the subsampling layer l
        k, b = _normal(rng, c_next, c_l, g.kh, g.kw), _normal(rng, c_next)
        delta_next = _normal(rng, *conv_def(u, k, b, convention, *geo).shape)

        def j(t: np.ndarray) -> float:
            return float(np.sum(delta_next * conv_def(f(t), k, b, convention, *geo)))

        formula = eq18_input_delta(delta_next, k, df(u), convention, form, *geo)
        return _vjp_err(formula, j, u)

    return case


def case_subsample_params(eq: str, kind: str, batch: bool = False) -> CaseFn:
    def case(rng: np.random.Generator) -> float:
        c, n = 3, int(rng.integers(2, 4))
        m = int(rng.integers(2, 4)) if batch else 1
        a = _tie_free(rng, m, c, 2 * n + 1, 3 * n)
        beta, b = _beta(rng, c), _normal(rng, c)
        d = down_def(a, n, kind)
        delta = _normal(rng, *d.shape)
        if eq == "19":
            return _vjp_err(
                delta.sum(axis=(0, 2, 3)),  # (19)
                lambda t: float(np.sum(delta * (beta[:, None, None] * d + t[:, None, None]))),
                b,
            )
        formula = np.sum(
            [eq20_beta_grad(delta[s], a[s], n, kind) for s in range(m)], axis=0
        )  # (20)
        return _vjp_err(
            formula,
            lambda t: float(np.sum(delta * (t[:, None, None] * d + b[:, None, None]))),
            beta,
        )

    return case


# --------------------------------------------------------------------------- the network


_NET_SHAPES = {
    "K1": (2, 1, 3, 2),
    "b1": (2,),
    "beta": (2,),
    "bs": (2,),
    "K2": (2, 2, 2, 3),
    "b2": (2,),
    "W": (3, 18),
    "b3": (3,),
}


def _net_forward(p: dict[str, np.ndarray], x: np.ndarray, convention: str) -> dict[str, np.ndarray]:
    """conv(1->2) -> sigmoid -> subsample sum 2x2 -> sigmoid -> conv(2->2) -> sigmoid -> dense."""
    f = ACT["sigmoid"][0]
    s: dict[str, np.ndarray] = {"x": x}
    s["U1"] = conv_def(x, p["K1"], p["b1"], convention)  # (1)
    s["A1"] = f(s["U1"])  # (2)
    s["U2"] = p["beta"][:, None, None] * down_def(s["A1"], 2, "sum") + p["bs"][:, None, None]
    s["A2"] = f(s["U2"])  # (4)
    s["U3"] = conv_def(s["A2"], p["K2"], p["b2"], convention)
    s["A3"] = f(s["U3"])
    s["y"] = p["W"] @ s["A3"].reshape(-1) + p["b3"]
    return s


def _net_backward(
    p: dict[str, np.ndarray], s: dict[str, np.ndarray], g: np.ndarray, convention: str, form: str
) -> dict[str, np.ndarray]:
    """Chain the equations; ``form`` selects eq. (10), (14), (18) as written or corrected."""
    df = ACT["sigmoid"][1]
    grads = {"W": np.outer(g, s["A3"].reshape(-1)), "b3": g}  # (5), (6)
    delta3 = (p["W"].T @ g).reshape(s["U3"].shape) * df(s["U3"])  # (8)
    grads["K2"] = eq14_kernel_grad(s["A2"], delta3, p["K2"].shape[-2:], convention, form)
    grads["b2"] = delta3.sum(axis=(1, 2))  # (12)
    delta2 = eq18_input_delta(delta3, p["K2"], df(s["U2"]), convention, form)  # (18)
    grads["bs"] = delta2.sum(axis=(1, 2))  # (19)
    grads["beta"] = eq20_beta_grad(delta2, s["A1"], 2, "sum")  # (20)
    delta1 = eq10_conv_delta(delta2, p["beta"], 2, "sum", s["A1"], df(s["U1"]), form)  # (10)
    grads["K1"] = eq14_kernel_grad(s["x"], delta1, p["K1"].shape[-2:], convention, form)
    grads["b1"] = delta1.sum(axis=(1, 2))  # (12)
    return grads


def case_net(convention: str, form: str) -> CaseFn:
    def case(rng: np.random.Generator) -> float:
        p = {name: _normal(rng, *shape) for name, shape in _NET_SHAPES.items()}
        p["beta"] = _beta(rng, 2)
        x = _normal(rng, 1, 11, 12)  # 9 x 11 conv maps: the 2x2 pooling crops a row and column
        g = _normal(rng, 3)
        grads = _net_backward(p, _net_forward(p, x, convention), g, convention, form)
        err = 0.0
        for name in _NET_SHAPES:

            def j(t: np.ndarray, name: str = name) -> float:
                return float(g @ _net_forward({**p, name: t}, x, convention)["y"])

            err = max(err, _vjp_err(grads[name], j, p[name]))
        return err

    return case
