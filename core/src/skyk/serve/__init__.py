"""Serving: interfaces for scaling and load-balancing policies."""
