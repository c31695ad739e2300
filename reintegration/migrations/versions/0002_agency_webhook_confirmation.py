"""An agency's new webhook address waits for the agency's confirmation (security review, issue 10).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agencies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_webhook_url", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("pending_webhook_secret", sa.String(length=600), nullable=True))
        batch_op.add_column(sa.Column("webhook_challenge", sa.String(length=600), nullable=True))
        batch_op.add_column(sa.Column("webhook_verification_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("webhook_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("webhook_confirmed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agencies", schema=None) as batch_op:
        for column in (
            "webhook_confirmed_at",
            "webhook_requested_at",
            "webhook_verification_id",
            "webhook_challenge",
            "pending_webhook_secret",
            "pending_webhook_url",
        ):
            batch_op.drop_column(column)
