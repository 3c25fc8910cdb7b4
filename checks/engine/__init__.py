"""The engine: everything numerical a check does, from the layer to a filled report.

- :mod:`~checks.engine.runner`: one check, step by step (the private runner behind
  :func:`checks.check_layer` and :func:`checks.check_vjp`);
- :mod:`~checks.engine.contract`: what a layer must honour (no mutation, determinism,
  gradient shapes, finiteness), and restoring its parameters whatever happens;
- :mod:`~checks.engine.finite_diff`: central, one-sided, Richardson and complex-step
  differences, with their rounding estimates;
- :mod:`~checks.engine.tolerances`: the dtype-keyed table and the per-element tolerance rule;
- :mod:`~checks.engine.precision`: whether a float32 layer may be differenced in float64;
- :mod:`~checks.engine.coverage`: which elements are checked one by one, which by projection;
- :mod:`~checks.engine.batching`: many perturbations per forward call along the batch axis;
- :mod:`~checks.engine.grouping`: elements whose effects do not overlap share a forward call;
- :mod:`~checks.engine.dispatch`: where the forward calls run (here, or on an executor);
- :mod:`~checks.engine.kinks`: non-differentiable points and the subgradients accepted there.

The engine uses the report layer (:mod:`checks.report`) and never a front door.
"""
