"""Orders, order lines and the transactional outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(32), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(255), unique=True, nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.String(32), sa.ForeignKey("orders.order_id"), primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("sku", sa.String(128), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("lease_token", sa.String(96), nullable=True),
        sa.Column("lease_expires_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("order_lines")
    op.drop_table("orders")
