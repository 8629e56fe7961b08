"""The audit log: entries written per request and stream, the audit key, signed checkpoints."""
