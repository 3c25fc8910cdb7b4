"""The audit table: one :class:`Spec` per row, in the order of the report.

A row is an (equation, variant, form) claim and the case that measures it
(:mod:`checks.audit.cases`). To audit a new claim, add one ``Spec`` to :data:`SPECS`; an
as-written row also needs its documented verdict in
:data:`checks.audit.derivations.EXPECTED_AS_WRITTEN`. Each row draws its random cases from a
generator seeded with its position in :data:`SPECS`: inserting a row changes the random draws
of every row after it (and so docs/seed_audit.md), appending one does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from checks.audit.cases import (
    CaseFn,
    case_conv_params,
    case_dense,
    case_eq1,
    case_eq1_strided,
    case_eq3,
    case_eq8,
    case_eq10,
    case_eq18,
    case_net,
    case_subsample_params,
)

__all__ = ["AW", "CO", "SPECS", "Spec"]


@dataclass(frozen=True)
class Spec:
    """One audited claim and the case that measures it.

    Attributes
    ----------
    equation, variant, form, claim, note : str
        As in :class:`checks.audit.derivations.AuditRow`.
    case : callable
        ``case(rng) -> float``, the form's largest relative error on one random draw.
    """

    equation: str
    variant: str
    form: str
    claim: str
    note: str
    case: CaseFn


AW, CO = "as-written", "corrected"

# shared by several rows
_VALID = "conv2 mode taken as 'valid' (the derivation: narrow convolution is the usual one)"
_E18 = "delta_i = sum_{j<=N_l} f'(U_i) (x) conv2(delta_i^l+1, K_ij^l+1, 'full')"

#: Every row of the audit, in the order of the report.
SPECS: tuple[Spec, ...] = (
    # (1) the convolution layer's forward pass
    Spec(
        "1",
        "conv",
        AW,
        "U_i = sum_j conv2(A_j, K_ij) + b_ij is a true-convolution layer",
        "per-pair b_ij only enter through their sum: one bias per output map; " + _VALID,
        case_eq1("conv", AW),
    ),
    Spec(
        "1",
        "xcorr",
        AW,
        "the same formula is a framework conv2d (cross-correlation) layer",
        "fails unless K is symmetric: conv2 flips the kernel, conv2d does not",
        case_eq1("xcorr", AW),
    ),
    Spec(
        "1",
        "xcorr",
        CO,
        "a framework conv2d layer is sum_j conv2(A_j, rot180(K_ij))",
        "xcorr2(A, K) = conv2(A, rot180(K))",
        case_eq1("xcorr", CO),
    ),
    Spec(
        "1",
        "stride+padding",
        CO,
        "stride S, zero padding P: conv2(pad(A_j, P), K_ij, 'valid') sampled every S",
        "beyond the derivation; checked with S=(2,3), P=(1,2)",
        case_eq1_strided,
    ),
    # (3) the subsampling layer's forward pass
    Spec(
        "3",
        "sum",
        AW,
        "U_i = beta_i down(A_i) + b_i with sum pooling",
        "down() is not defined in the derivation; taken as n x n blocks, cropped borders",
        case_eq3("sum"),
    ),
    Spec(
        "3",
        "mean",
        AW,
        "U_i = beta_i down(A_i) + b_i with mean pooling",
        "down() is not defined in the derivation; taken as n x n blocks, cropped borders",
        case_eq3("mean"),
    ),
    Spec(
        "3",
        "max",
        AW,
        "U_i = beta_i down(A_i) + b_i with max pooling",
        "down() is not defined in the derivation; taken as n x n blocks, cropped borders",
        case_eq3("max"),
    ),
    # (5), (6) the dense layer
    Spec("5", "single", AW, "dJ/dW = delta x^T", "one sample", case_dense("5", False)),
    Spec(
        "5",
        "batch",
        AW,
        "dJ/dW = delta x^T with samples as columns",
        "the matrix product sums the per-sample outer products (J summed over samples)",
        case_dense("5", True),
    ),
    Spec("6", "single", AW, "dJ/db = delta", "one sample", case_dense("6", False)),
    Spec(
        "6",
        "batch",
        CO,
        "dJ/db = sum over samples of delta_n",
        "the derivation is per-sample; for a batch delta is a matrix and must be summed",
        case_dense("6", True),
    ),
    # (8)/(16) through the activation
    Spec(
        "8/16",
        "sigmoid",
        AW,
        "delta = dJ/dA (x) f'(U), element-wise",
        "f = sigmoid",
        case_eq8("sigmoid"),
    ),
    Spec("8/16", "tanh", AW, "delta = dJ/dA (x) f'(U), element-wise", "f = tanh", case_eq8("tanh")),
    Spec(
        "8/16",
        "relu",
        AW,
        "delta = dJ/dA (x) f'(U), element-wise",
        "f = relu, |U| > 0.05 (away from the kink)",
        case_eq8("relu"),
    ),
    # (10)/(11) the delta of a layer followed by subsampling: up() must be down()'s adjoint
    Spec(
        "10/11",
        "sum",
        AW,
        "conv-layer delta = beta up(delta^l+1) (x) f'(U) before sum pooling",
        "up = Kronecker with ones (Bouvrie), zeros where down() cropped; f = tanh, beta != 1",
        case_eq10("sum", AW),
    ),
    Spec(
        "10/11",
        "sum",
        CO,
        "same with up = the adjoint of sum down",
        "up = ones-Kronecker",
        case_eq10("sum", CO),
    ),
    Spec(
        "10/11",
        "mean",
        AW,
        "conv-layer delta = beta up(delta^l+1) (x) f'(U) before mean pooling",
        "ones-Kronecker up lacks the 1/n^2 of mean pooling: off by n^2",
        case_eq10("mean", AW),
    ),
    Spec(
        "10/11",
        "mean",
        CO,
        "same with up = the adjoint of mean down",
        "up = ones-Kronecker / n^2",
        case_eq10("mean", CO),
    ),
    Spec(
        "10/11",
        "max",
        AW,
        "conv-layer delta = beta up(delta^l+1) (x) f'(U) before max pooling",
        "ones-Kronecker up spreads delta over the whole block; max needs argmax routing",
        case_eq10("max", AW),
    ),
    Spec(
        "10/11",
        "max",
        CO,
        "same with up = the adjoint of max down",
        "up routes each delta to its block's argmax",
        case_eq10("max", CO),
    ),
    # (12) the convolution bias
    Spec(
        "12",
        "conv",
        AW,
        "dJ/db_i = sum_st (delta_i)_st",
        "either convention",
        case_conv_params("12", "conv", AW),
    ),
    Spec(
        "12",
        "batch",
        CO,
        "dJ/db_i = sum over samples and s,t of delta_i",
        "the derivation is per-sample",
        case_conv_params("12", "conv", CO, batch=True),
    ),
    # (13), (14) the kernel gradient
    Spec(
        "13",
        "conv",
        AW,
        "dJ/dK_ij = sum_st delta_st P_st, P_st the window of A_j",
        "reading P_st as the plain window; true convolution needs rot180 of it",
        case_conv_params("13", "conv", AW),
    ),
    Spec(
        "13",
        "conv",
        CO,
        "dJ/dK_ij = sum_st delta_st rot180(P_st)",
        "P_st must be the elements multiplied by K, i.e. the flipped window (Bouvrie)",
        case_conv_params("13", "conv", CO),
    ),
    Spec(
        "13",
        "xcorr",
        AW,
        "dJ/dK_ij = sum_st delta_st P_st",
        "holds for cross-correlation, where the window is not flipped",
        case_conv_params("13", "xcorr", AW),
    ),
    Spec(
        "14",
        "conv",
        AW,
        "dJ/dK_ij = rot180(conv2(A_j, rot180(delta_i), 'valid'))",
        _VALID,
        case_conv_params("14", "conv", AW),
    ),
    Spec(
        "14",
        "xcorr",
        AW,
        "the same for a framework conv2d (cross-correlation) layer",
        "the outer rot180 is wrong for xcorr",
        case_conv_params("14", "xcorr", AW),
    ),
    Spec(
        "14",
        "xcorr",
        CO,
        "dJ/dK_ij = conv2(A_j, rot180(delta_i), 'valid')",
        "= xcorr2(A_j, delta_i, 'valid'), no outer rot180",
        case_conv_params("14", "xcorr", CO),
    ),
    Spec(
        "14",
        "padding",
        AW,
        "(14) applied to the zero-padded A_j (true convolution)",
        "P = (1, 2); padding only changes A",
        case_conv_params("14", "conv", AW, padding=(1, 2)),
    ),
    Spec(
        "14",
        "stride",
        AW,
        "(14) with the strided delta, cropped to kh x kw",
        "S = (2, 3), sizes not divisible by S; the derivation has no stride",
        case_conv_params("14", "conv", AW, stride=(2, 3)),
    ),
    Spec(
        "14",
        "stride",
        CO,
        "(14) with delta dilated by S-1 zeros, cropped to kh x kw",
        "S = (2, 3), P = (1, 0), true convolution",
        case_conv_params("14", "conv", CO, stride=(2, 3), padding=(1, 0)),
    ),
    Spec(
        "14",
        "dilation",
        CO,
        "(14) keeping every D-th lag of conv2(A_j, rot180(delta_i), 'valid')",
        "D = (2, 1), S = (1, 2), cross-correlation (no outer rot180)",
        case_conv_params("14", "xcorr", CO, stride=(1, 2), dilation=(2, 1)),
    ),
    Spec(
        "14",
        "batch",
        CO,
        "dJ/dK = sum over samples of (14)",
        "the derivation is per-sample",
        case_conv_params("14", "conv", CO, batch=True),
    ),
    # (18) the delta of a layer followed by a convolution
    Spec(
        "18",
        "conv",
        AW,
        _E18,
        "N_l = N_l+1 = 3 to make it executable; wrong indices and no rot180",
        case_eq18("conv", AW, 3, 3),
    ),
    Spec(
        "18",
        "xcorr",
        AW,
        _E18,
        "N_l = N_l+1 = 3; wrong indices (delta_i, K_ij, sum over j)",
        case_eq18("xcorr", AW, 3, 3),
    ),
    Spec(
        "18",
        "conv-1map",
        AW,
        _E18,
        "one map each, so only the missing rot180 matters",
        case_eq18("conv", AW, 1, 1),
    ),
    Spec(
        "18",
        "xcorr-1map",
        AW,
        _E18,
        "one map each: without rot180 it is right for xcorr",
        case_eq18("xcorr", AW, 1, 1),
    ),
    Spec(
        "18",
        "conv",
        CO,
        "delta_j = f'(U_j) (x) sum_i conv2(delta_i^l+1, rot180(K_ij^l+1), 'full')",
        "sum over the next layer's maps i; N_l=2 != N_l+1=3",
        case_eq18("conv", CO, 2, 3),
    ),
    Spec(
        "18",
        "xcorr",
        CO,
        "delta_j = f'(U_j) (x) sum_i conv2(delta_i^l+1, K_ij^l+1, 'full')",
        "no rot180 for cross-correlation; N_l=3 != N_l+1=2",
        case_eq18("xcorr", CO, 3, 2),
    ),
    Spec(
        "18",
        "stride",
        CO,
        "corrected (18) with delta dilated by S-1 zeros, zero-extended",
        "S = (2, 3), true convolution",
        case_eq18("conv", CO, 2, 3, stride=(2, 3)),
    ),
    Spec(
        "18",
        "padding",
        CO,
        "corrected (18), then the padded border cropped",
        "P = (1, 2), cross-correlation",
        case_eq18("xcorr", CO, 2, 3, padding=(1, 2)),
    ),
    Spec(
        "18",
        "dilation",
        CO,
        "corrected (18) with K dilated by D-1 zeros between its taps",
        "D = (2, 2), S = (2, 1), true convolution",
        case_eq18("conv", CO, 2, 3, stride=(2, 1), dilation=(2, 2)),
    ),
    # (19), (20) the subsampling parameters
    Spec(
        "19",
        "sum",
        AW,
        "dJ/db_i = sum_st (delta_i)_st",
        "sum pooling",
        case_subsample_params("19", "sum"),
    ),
    Spec(
        "19",
        "mean",
        AW,
        "dJ/db_i = sum_st (delta_i)_st",
        "mean pooling",
        case_subsample_params("19", "mean"),
    ),
    Spec(
        "19",
        "max",
        AW,
        "dJ/db_i = sum_st (delta_i)_st",
        "max pooling",
        case_subsample_params("19", "max"),
    ),
    Spec(
        "20",
        "sum",
        AW,
        "dJ/dbeta_i = sum_st (delta_i (x) down(A_i))_st",
        "d = down(A) with the layer's own sum pooling",
        case_subsample_params("20", "sum"),
    ),
    Spec(
        "20",
        "mean",
        AW,
        "dJ/dbeta_i = sum_st (delta_i (x) down(A_i))_st",
        "d = down(A) with the layer's own mean pooling",
        case_subsample_params("20", "mean"),
    ),
    Spec(
        "20",
        "max",
        AW,
        "dJ/dbeta_i = sum_st (delta_i (x) down(A_i))_st",
        "d = down(A) with the layer's own max pooling",
        case_subsample_params("20", "max"),
    ),
    Spec(
        "20",
        "batch",
        CO,
        "dJ/dbeta = sum over samples of (20)",
        "the derivation is per-sample",
        case_subsample_params("20", "mean", batch=True),
    ),
    # the end-to-end network: conv-sigmoid-sum pool-conv-dense, chaining (5)-(20)
    Spec(
        "net",
        "conv",
        AW,
        "LeNet chain with (10), (14), (18) as written",
        "conv-sigmoid-sum pool-conv-dense; fails through (18)",
        case_net("conv", AW),
    ),
    Spec(
        "net",
        "xcorr",
        AW,
        "the same chain for cross-correlation layers",
        "fails through (14) and (18)",
        case_net("xcorr", AW),
    ),
    Spec(
        "net",
        "conv",
        CO,
        "LeNet chain with the corrected forms",
        "all 8 parameter tensors",
        case_net("conv", CO),
    ),
    Spec(
        "net",
        "xcorr",
        CO,
        "LeNet chain with the corrected forms, cross-correlation",
        "all 8 parameter tensors",
        case_net("xcorr", CO),
    ),
)
