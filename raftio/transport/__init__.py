"""Transports: how a peer's RPCs reach the others (in memory for tests, TCP)."""
