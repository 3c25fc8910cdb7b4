"""The report: what a check found, and how it is told.

The lowest layer of ``checks``: it imports nothing else from the package. The engine fills a
:class:`Report` and raises the errors defined here; the front doors only read reports.

- :mod:`~checks.report.data`: :class:`Report`, :class:`TensorReport`, the JSON schema;
- :mod:`~checks.report.errors`: :class:`GradcheckError` and its two kinds, each carrying its
  report;
- :mod:`~checks.report.messages`: the one place that builds failure text;
- :mod:`~checks.report.hints`: the catalogue of known derivation mistakes, recognised from a
  tensor's analytic and numerical gradients;
- :mod:`~checks.report.plotting`: heatmaps of the per-element error (matplotlib optional).
- :mod:`~checks.report.table`: the command line's per-tensor table (``rich``).
"""

from checks.report import data, messages, plotting
from checks.report.data import SCHEMA_VERSION, Report, TensorReport, order_with_ties
from checks.report.errors import GradcheckError, GradientMismatchError, LayerContractError

data.RENDERERS.update(text=messages.format_report, plot=plotting.plot_report)

__all__ = [
    "SCHEMA_VERSION",
    "GradcheckError",
    "GradientMismatchError",
    "LayerContractError",
    "Report",
    "TensorReport",
    "order_with_ties",
]
