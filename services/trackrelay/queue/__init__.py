"""The queue: every Redis key, script and command trackrelay issues (stream, DLQ, quota,
rate budget, published views). The only package that imports ``redis``."""
