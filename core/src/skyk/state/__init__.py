"""What skyk remembers between commands: clusters and their cost, in SQLite."""
