"""Pure decisions: leases, backoff, and (later) rate, scaling and shedding math.

Nothing in this package performs I/O; an import-linter contract enforces it.
"""
