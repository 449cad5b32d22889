"""The queue connection's type: one Redis, or a Redis Cluster (``client.connect``)."""

from redis.asyncio import Redis, RedisCluster

Queue = Redis | RedisCluster
"""The queue connection every ``trackrelay.queue`` function takes. Outside this package
it is a handle to pass back in: the commands themselves are issued here."""
