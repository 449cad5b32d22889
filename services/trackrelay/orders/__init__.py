"""The order service: accept orders, store them with their outbox rows, relay the outbox."""
