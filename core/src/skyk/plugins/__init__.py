"""Plugin discovery (stevedore entry points) and hook calls (pluggy)."""
