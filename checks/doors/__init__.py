"""The front doors: every way a user reaches the checker.

- :mod:`~checks.doors.api`: :func:`check_layer` and :func:`check_vjp`, thin wrappers over the
  engine's runner;
- :mod:`~checks.doors.adapters`: :func:`from_functions` and :class:`LayerAdapter` for layers
  written another way (also importable as ``checks.adapters``);
- :mod:`~checks.doors.cli`: ``python -m checks layer|selftest|audit|verify``;
- :mod:`~checks.doors.pytest_plugin`: the ``gradcheck`` fixture and ``--gradcheck-json`` /
  ``--gradcheck-plots`` (the ``pytest11`` entry point);
- :mod:`~checks.doors.strategies`: Hypothesis strategies (also ``checks.strategies``);
- :mod:`~checks.doors.jax_front`: ``checks.jax.check_function`` for JAX functions and
  ``custom_vjp`` backward passes (JAX imported on first use).

The doors use the engine and the report; neither of those imports a door. Only the plugin
imports pytest, only the strategies import Hypothesis.
"""
