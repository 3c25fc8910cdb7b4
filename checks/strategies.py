"""Hypothesis strategies for checking layers, where users import them from (defined in
:mod:`checks.doors.strategies`)."""

from checks.doors.strategies import (
    ConvConfig,
    DenseConfig,
    SubsampleConfig,
    conv_configs,
    dense_configs,
    gradcheck_property,
    subsample_configs,
    tie_free_arrays,
    well_conditioned_arrays,
)

__all__ = [
    "ConvConfig",
    "DenseConfig",
    "SubsampleConfig",
    "conv_configs",
    "dense_configs",
    "gradcheck_property",
    "subsample_configs",
    "tie_free_arrays",
    "well_conditioned_arrays",
]
