"""The checker's exceptions, where users import them from (defined in
:mod:`checks.report.errors`)."""

from checks.report.errors import GradcheckError, GradientMismatchError, LayerContractError

__all__ = ["GradcheckError", "GradientMismatchError", "LayerContractError"]
