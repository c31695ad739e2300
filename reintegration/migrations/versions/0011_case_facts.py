"""Anonymous case facts for the reports (issue 17): sex, age band and the victim's HTCDS picklists,
kept outside the person vault so that they survive erasure. Cases opened before this revision get
their sex and age band at ``reintegration db upgrade`` and at each API start
(``reintegration.case_facts.keep_missing``: it reads the vault with the keyring).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_facts",
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("sex", sa.String(length=32), nullable=False),
        sa.Column("age_band", sa.String(length=8), nullable=False),
        sa.Column("recruitment_methods", sa.JSON(), nullable=False),
        sa.Column("recruitment_websites", sa.JSON(), nullable=False),
        sa.Column("control_methods", sa.JSON(), nullable=False),
        sa.Column("sex_exploitation_types", sa.JSON(), nullable=False),
        sa.Column("forced_labour_industry", sa.String(length=64), nullable=True),
        sa.Column("relationship_to_trafficker", sa.String(length=32), nullable=True),
        sa.Column("referred_on", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id"),
    )


def downgrade() -> None:
    op.drop_table("case_facts")
