"""Exec and log streams: the relay between a CLI and an agent, and forwarding to replicas."""
