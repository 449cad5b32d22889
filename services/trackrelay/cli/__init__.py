"""The ``trackrelay`` command line."""

from trackrelay.cli.commands import main

__all__ = ["main"]
