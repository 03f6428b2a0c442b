"""Typer CLI: one module per command group, registered in :mod:`policy_export.cli.app`."""
