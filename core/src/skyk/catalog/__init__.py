"""Price catalogs: offerings every cloud contributes, and how they are read."""
