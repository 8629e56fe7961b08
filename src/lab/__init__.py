"""labctl: control plane for homelabs and small datacenters."""

__version__ = "0.1.0"
