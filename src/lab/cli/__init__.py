"""labctl, the operator CLI. Modules here keep heavy imports inside functions."""
