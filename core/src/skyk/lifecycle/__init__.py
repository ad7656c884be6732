"""Cluster lifecycle: launch, exec, stop, start, down and reconciling state with reality."""
