"""Outbox rows remember the fold they went into; event ids fit aggregate ids.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("fold_token", sa.String(96), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # Aggregate ids ("agg:<window>:<sku>") are longer than order-line ids.
        op.alter_column("outbox", "event_id", type_=sa.String(200))


def downgrade() -> None:
    op.drop_column("outbox", "fold_token")
