"""The derivation audit and the checker's self-test corpus.

What lives here:

- the derivation audit (``python -m checks audit``): every equation (1)-(20) of
  docs/derivation.md as written and as corrected (``forms``), each compared with finite
  differences of an independent forward model (``model``) on random cases (``cases``), one row
  per entry of the table ``specs``; ``derivations`` runs the table and reports it;
- ``reference``: ``make verify`` (``python -m checks verify``), the audit and then every
  cnn_ref reference layer through the checker;
- ``mutants``, ``corpus`` and ``selftest``: the corruptions, the corpus of deliberately broken
  layers built with them (and of correct layers that are awkward to check), one entry per case,
  and the checker's self-test on it (``python -m checks selftest``).

This subpackage sits at the top of the import layers. It may use the checker's public API
(``checks.check_layer``, ``checks.check_vjp``), the report (``checks.report``: its data,
hints and errors) and ``cnn_ref``; nothing in the engine or the report may import it.
"""
