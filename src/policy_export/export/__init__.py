"""Exporters: one module per artifact format."""
