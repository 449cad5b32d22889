"""``python -m trackrelay.cli``."""

from trackrelay.cli.program import main

if __name__ == "__main__":
    raise SystemExit(main())
