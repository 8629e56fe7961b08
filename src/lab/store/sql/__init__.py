"""The repositories of both SQL backends, written once over a small :class:`Dialect`.

A backend keeps only what really differs: its connection (pool or single connection and the
thread hop), its schema and migrations, and its group-commit writer. It hands the
repositories a :class:`Runner` (``read``/``write`` of one transaction function) whose
:class:`Dialect` says how placeholders, label predicates, integrity errors and values are
spelled.
"""
