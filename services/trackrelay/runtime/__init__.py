"""Process plumbing every long-running command shares: signals, ports, retry pacing,
serving, error lines. It imports no part of the system above it."""
