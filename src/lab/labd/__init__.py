"""labd, the master daemon."""
