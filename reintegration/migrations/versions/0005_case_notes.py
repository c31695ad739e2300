"""Case notes (issue 14): a case's and its tasks' notes, their text sealed with the case's key.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_notes",
        sa.Column("note_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("author_sub", sa.String(length=200), nullable=False),
        sa.Column("author_role", sa.String(length=16), nullable=False),
        sa.Column("author_agency", sa.String(length=100), nullable=True),
        sa.Column("task_agency", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("note_id"),
    )
    op.create_index("ix_case_notes_case_order", "case_notes", ["case_id", "created_at", "note_id"], unique=False)
    op.create_index("ix_case_notes_task_order", "case_notes", ["task_id", "created_at", "note_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_case_notes_task_order", table_name="case_notes")
    op.drop_index("ix_case_notes_case_order", table_name="case_notes")
    op.drop_table("case_notes")
