"""The optimizer: rank every feasible offering for a task by price."""
