"""``python -m skyk`` runs the CLI."""

from skyk.cli.main import main

raise SystemExit(main())
