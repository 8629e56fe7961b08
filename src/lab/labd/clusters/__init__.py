"""labd's cluster registry (``ctx().clusters``): records, sealed kubeconfigs, live health."""

from lab.labd.clusters.health import Health, probe
from lab.labd.clusters.registry import (
    ClusterRegistry,
    check_cluster_name,
    kubeconfig_secret,
)

__all__ = ["ClusterRegistry", "Health", "check_cluster_name", "kubeconfig_secret", "probe"]
