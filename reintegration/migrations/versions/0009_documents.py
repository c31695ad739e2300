"""Documents of a case (issue 14): what each is; their encrypted bytes are in the blob store.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("document_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("task_agency", sa.String(length=100), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("media_type", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("blob_key", sa.String(length=128), nullable=False),
        sa.Column("uploaded_by", sa.String(length=200), nullable=False),
        sa.Column("uploader_role", sa.String(length=16), nullable=False),
        sa.Column("uploader_agency", sa.String(length=100), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("document_id"),
    )
    op.create_index("ix_documents_case_order", "documents", ["case_id", "uploaded_at", "document_id"], unique=False)
    op.create_index("ix_documents_task_order", "documents", ["task_id", "uploaded_at", "document_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_documents_task_order", table_name="documents")
    op.drop_index("ix_documents_case_order", table_name="documents")
    op.drop_table("documents")
