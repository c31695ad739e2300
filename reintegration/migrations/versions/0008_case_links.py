"""Linked cases (issue 14): family members, co-victims of one trafficking situation.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_links",
        sa.Column("link_id", sa.String(length=64), nullable=False),
        sa.Column("case_a", sa.String(length=64), nullable=False),
        sa.Column("case_b", sa.String(length=64), nullable=False),
        sa.Column("relation", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("link_id"),
    )
    op.create_index("ix_case_links_pair", "case_links", ["case_a", "case_b"], unique=True)
    op.create_index("ix_case_links_b", "case_links", ["case_b"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_case_links_b", table_name="case_links")
    op.drop_index("ix_case_links_pair", table_name="case_links")
    op.drop_table("case_links")
