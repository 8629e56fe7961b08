"""Process plumbing shared by the daemons and the CLI: config, logging, shutdown, serving."""
