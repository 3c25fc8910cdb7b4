"""Finite-difference gradient checker for hand-written layers.

>>> from checks import check_layer, check_vjp, GradientMismatchError, LayerContractError

See :func:`check_layer` for the numerical method and :class:`Report` for what a check returns.
"""

from checks.doors.api import check_layer, check_vjp
from checks.report import Report, TensorReport
from checks.report.errors import GradcheckError, GradientMismatchError, LayerContractError

__all__ = [
    "GradcheckError",
    "GradientMismatchError",
    "LayerContractError",
    "Report",
    "TensorReport",
    "check_layer",
    "check_vjp",
]
