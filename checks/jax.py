"""The JAX front door, where users import it from (defined in
:mod:`checks.doors.jax_front`): ``checks.jax.check_function(f, *args)``."""

from checks.doors.jax_front import check_function

__all__ = ["check_function"]
