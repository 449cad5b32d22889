"""trackrelay: keep taking orders when analytics is slow.

Orders and their analytics events are written in one database transaction; a
relay moves the events into a Redis Stream; forwarders push them to analytics at
the pace analytics can take.
"""

__version__ = "0.1.0"
