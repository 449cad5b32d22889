"""The order service: the order API and the order store (an order and its outbox rows in
one transaction). The relay it runs in-process lives in ``trackrelay.relay``."""
