"""Cluster operations: k3s brought up, changed and removed on enrolled servers through their
agents, each a recorded operation with steps (docs/clusters.md, "Create and day 2").

``plan`` validates requests and lists an operation's steps (pure); ``token`` makes and checks
k3s join tokens (pure); ``render`` writes the one k3s config template; ``node`` runs argv on a
node through the agent exec path; ``steps`` are the steps; ``registry`` keeps the cluster
registry's record of a created cluster; ``engine`` runs operations under a lease and fails the
abandoned ones.
"""
