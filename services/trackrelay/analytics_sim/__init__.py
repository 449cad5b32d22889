"""The analytics simulator: a stand-in analytics service behind the push contract.

A product feature for demos, tests and benchmarks: a capacity model (latency
rises with load, 429 past a queue limit, optional collapse), a fault schedule,
duplicate detection and weighted popularity counts.
"""
