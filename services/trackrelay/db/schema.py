"""The order store's tables: orders, their lines, and the transactional outbox.

One metadata object shared by the store and the Alembic migrations.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

MIGRATION_LOCK_KEY = 0x7472_6163_6B72  # "trackr": the advisory lock held while migrating

OUTBOX_CHANNEL = "trackrelay_outbox"
"""The PostgreSQL notification channel writers of outbox rows signal at commit: relays
LISTEN on it (``relay.wakeup``)."""
NOTIFY_OUTBOX = f"SELECT pg_notify('{OUTBOX_CHANNEL}', '')"
"""A statement's tail that announces its outbox rows (one notification per transaction)."""

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint.
_BigIntId = BigInteger().with_variant(Integer(), "sqlite")

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(32), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("idempotency_key", String(255), unique=True, nullable=True),
    Column("request_hash", String(64), nullable=False),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(32), ForeignKey("orders.order_id"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("sku", String(128), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("price", BigInteger, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", _BigIntId, primary_key=True, autoincrement=True),
    # Unique by construction (order id + line number); no index: nothing looks rows up by it.
    Column("event_id", String(200), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("lease_token", String(96), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    # Set before a batch is folded into an aggregate: a retry folds it under the same token.
    Column("fold_token", String(96), nullable=True),
)
