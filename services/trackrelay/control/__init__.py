"""Pure decisions: the controller, the limiter, shedding, leases, backoff, the breaker and
the retry allowance. Plain data in, plain data out: nothing here performs I/O, and an
import-linter contract keeps it so."""
