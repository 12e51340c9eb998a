"""Subcommands of the ``gen4d`` CLI, one module each (see gen4d/cli.py)."""
