"""The outbox relay: outbox rows into the stream under leases, ingress shedding under the
queue quota, and the outbox guard that keeps the outbox under its own."""
