"""Adapters for layers that do not follow the checker's protocol, where users import them
from (defined in :mod:`checks.doors.adapters`)."""

from checks.doors.adapters import FunctionLayer, LayerAdapter, from_functions

__all__ = ["FunctionLayer", "LayerAdapter", "from_functions"]
