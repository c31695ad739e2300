"""The users' directory, their notifications and bulk reassignments (issue 15).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("countries", sa.JSON(), nullable=False),
        sa.Column("agency", sa.String(length=100), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("notify", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_in_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_index("ix_users_role", "users", ["role"], unique=False)
    op.create_index("ix_users_agency", "users", ["agency"], unique=False)
    op.create_table(
        "user_notifications",
        sa.Column("notification_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("case_reference", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("email_status", sa.String(length=16), nullable=False),
        sa.Column("email_attempts", sa.Integer(), nullable=False),
        sa.Column("emailed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("digest_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("notification_id"),
    )
    op.create_index(
        "ix_user_notifications_user_order",
        "user_notifications",
        ["user_id", "created_at", "notification_id"],
        unique=False,
    )
    op.create_index("ix_user_notifications_email", "user_notifications", ["email_status", "user_id"], unique=False)
    op.create_index("ix_user_notifications_case_id", "user_notifications", ["case_id"], unique=False)
    op.create_table(
        "case_transfers",
        sa.Column("transfer_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("case_reference", sa.String(length=32), nullable=False),
        sa.Column("from_country", sa.String(length=2), nullable=False),
        sa.Column("from_caseworker", sa.String(length=200), nullable=True),
        sa.Column("to_country", sa.String(length=2), nullable=False),
        sa.Column("to_caseworker", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refusal", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("transfer_id"),
    )
    op.create_index("ix_case_transfers_case", "case_transfers", ["case_id", "status"], unique=False)
    op.create_index("ix_case_transfers_to", "case_transfers", ["to_country", "status"], unique=False)
    op.create_index("ix_case_transfers_from", "case_transfers", ["from_country", "status"], unique=False)
    op.create_index(
        "ux_case_transfers_pending",
        "case_transfers",
        ["case_id"],
        unique=True,
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "plan_drafts",
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("services", sa.JSON(), nullable=False),
        sa.Column("notes", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id"),
    )
    op.create_index("ix_user_notifications_unread", "user_notifications", ["user_id", "read_at"], unique=False)
    with op.batch_alter_table("cases") as cases:
        cases.add_column(sa.Column("awaiting_approval", sa.Boolean(), nullable=False, server_default=sa.false()))
        cases.create_index("ix_cases_awaiting_approval", ["awaiting_approval"], unique=False)
    # The closures already waiting (the projection keeps the column from now on).
    op.execute(
        sa.text(
            "UPDATE cases SET awaiting_approval = true WHERE CAST(allowed_steps AS VARCHAR) LIKE '%approve-closure%'"
        )
    )
    op.create_table(
        "reassignments",
        sa.Column("reassignment_id", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("from_caseworker", sa.String(length=200), nullable=False),
        sa.Column("to_caseworker", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("countries", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("reassignment_id"),
    )
    op.create_index("ix_reassignments_from_caseworker", "reassignments", ["from_caseworker"], unique=False)


def downgrade() -> None:
    op.drop_table("plan_drafts")
    op.drop_index("ux_case_transfers_pending", table_name="case_transfers")
    op.drop_index("ix_case_transfers_from", table_name="case_transfers")
    op.drop_index("ix_case_transfers_to", table_name="case_transfers")
    op.drop_index("ix_case_transfers_case", table_name="case_transfers")
    op.drop_table("case_transfers")
    op.drop_index("ix_reassignments_from_caseworker", table_name="reassignments")
    op.drop_table("reassignments")
    with op.batch_alter_table("cases") as cases:
        cases.drop_index("ix_cases_awaiting_approval")
        cases.drop_column("awaiting_approval")
    op.drop_index("ix_user_notifications_unread", table_name="user_notifications")
    op.drop_index("ix_user_notifications_case_id", table_name="user_notifications")
    op.drop_index("ix_user_notifications_email", table_name="user_notifications")
    op.drop_index("ix_user_notifications_user_order", table_name="user_notifications")
    op.drop_table("user_notifications")
    op.drop_index("ix_users_agency", table_name="users")
    op.drop_index("ix_users_role", table_name="users")
    op.drop_table("users")
