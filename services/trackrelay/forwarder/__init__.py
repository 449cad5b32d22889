"""Forwarders: read the stream through the consumer group and push to analytics."""
