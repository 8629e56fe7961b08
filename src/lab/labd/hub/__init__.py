"""Agent sessions: the registry of connected agents, one session per agent, its streams."""
