"""The ``trackrelay`` command line."""

from trackrelay.cli.program import main

__all__ = ["main"]
