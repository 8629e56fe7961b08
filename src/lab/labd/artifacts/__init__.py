"""labd's artifacts: content-addressed files (k3s binaries, image tarballs) for the agents."""

from lab.labd.artifacts.ranges import RangeNotSatisfiable, parse_range
from lab.labd.artifacts.store import ArtifactStore, check_key

__all__ = ["ArtifactStore", "RangeNotSatisfiable", "check_key", "parse_range"]
