"""Blind indexes of the person vault (issue 14): search by name, birth date or identity number, and
duplicates at opening, by keyed hashes only. Cases opened before it are indexed by
``reintegration db upgrade`` and at the API's start (the hashes need the keyring, which a migration does not hold).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "person_index",
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "kind"),
    )
    op.create_index("ix_person_index_value", "person_index", ["value"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_person_index_value", table_name="person_index")
    op.drop_table("person_index")
