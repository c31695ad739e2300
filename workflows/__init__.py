"""The case journey as Temporal workflows: deterministic code and the pure rules it follows."""
