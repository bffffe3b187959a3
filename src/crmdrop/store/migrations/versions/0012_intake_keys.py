"""Intake keys: what a non-SMTP source has already handed over (a Mailgun token, an
IMAP message), written in the same transaction as its deliveries.

Revision ID: 0012
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intake_keys",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "key"),
    )


def downgrade() -> None:
    op.drop_table("intake_keys")
