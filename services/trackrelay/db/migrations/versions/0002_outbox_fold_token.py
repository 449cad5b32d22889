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
    # Batch mode: SQLite cannot alter a column in place (the table is copied there).
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("fold_token", sa.String(96), nullable=True))
        # Aggregate ids ("agg:<window>:<sku>") are longer than order-line ids.
        batch.alter_column("event_id", type_=sa.String(200), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("fold_token")
        batch.alter_column("event_id", type_=sa.String(64), existing_nullable=False)
