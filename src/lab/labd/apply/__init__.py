"""labd's side of ``labctl apply``: planning an apply (pure) before the store commits it."""
