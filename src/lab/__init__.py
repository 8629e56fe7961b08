"""labctl: control plane for homelabs and small datacenters."""

try:
    # Written by every build and by `pip install -e .` from the git tag (pyproject.toml).
    from lab._version import __version__
except ImportError:  # a source tree that was never built or installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
