"""Rich tables and plots. Only the CLI imports this package."""
