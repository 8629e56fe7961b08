"""labd's HTTP routes, one module per area."""
