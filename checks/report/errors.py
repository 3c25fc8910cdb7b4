"""Exceptions raised by the gradient checker.

Every checker exception subclasses :class:`AssertionError` so that pytest reports a failed
check as a test *failure*, not an error, and carries the :class:`~checks.report.Report` that
explains it in ``.report``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from checks.report.data import Report

__all__ = ["GradcheckError", "GradientMismatchError", "LayerContractError"]


class GradcheckError(AssertionError):
    """Base class of every checker failure.

    Parameters
    ----------
    message : str
        The full failure text (built by :mod:`checks.report.messages`).
    report : Report or None
        The report of the check that failed; ``None`` only when the check could not start
        (for example the layer raised on its very first forward call).
    """

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report


class GradientMismatchError(GradcheckError):
    """The analytic gradient disagrees with the numerical one beyond the tolerance."""


class LayerContractError(GradcheckError):
    """The layer broke the protocol the checker relies on.

    Examples: it mutates ``x``, a parameter or ``dy``; its forward is not deterministic; it
    returns a gradient of the wrong shape or dtype kind; it produces NaN/Inf; its output shape
    changes under a perturbation; or it raises.
    """
