"""``labctl apply``: declarative documents for labd's own resources (docs/apply.md).

Shared by labctl (reading files, diffs) and labd (checking what it is sent): the documents and
their schemas (:mod:`lab.apply.documents`) and unified diffs (:mod:`lab.apply.diffs`). Pure but
for reading the files and references it is asked to read.
"""
