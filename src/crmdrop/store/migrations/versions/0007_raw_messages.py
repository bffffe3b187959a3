"""Raw messages stored once, keyed by their SHA-256; deliveries refer to them.

Revision ID: 0007
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0011"
branch_labels = None
depends_on = None

_BATCH = 200  # rows whose bytes are held at once while moving them


def upgrade() -> None:
    op.create_table(
        "raw_messages",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_raw_messages")),
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("raw_digest", sa.String(length=64), nullable=True))
    _move_raw_bytes()
    with op.batch_alter_table("deliveries") as batch:
        batch.create_foreign_key(
            op.f("fk_deliveries_raw_digest_raw_messages"),
            "raw_messages",
            ["raw_digest"],
            ["digest"],
        )
        batch.create_index(op.f("ix_deliveries_raw_digest"), ["raw_digest"], unique=False)
        batch.drop_column("raw")


def _move_raw_bytes() -> None:
    """Each distinct message once into raw_messages; its deliveries point at it."""
    conn = op.get_bind()
    deliveries = sa.table(
        "deliveries",
        sa.column("id", sa.Integer),
        sa.column("raw", sa.LargeBinary),
        sa.column("raw_digest", sa.String),
        sa.column("received_at", sa.DateTime(timezone=True)),
    )
    raws = sa.table(
        "raw_messages",
        sa.column("digest", sa.String),
        sa.column("data", sa.LargeBinary),
        sa.column("size", sa.Integer),
        sa.column("received_at", sa.DateTime(timezone=True)),
    )
    last = 0
    known: set[str] = set()
    while True:
        rows = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.raw, deliveries.c.received_at)
            .where(deliveries.c.id > last, deliveries.c.raw.is_not(None))
            .order_by(deliveries.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        for row in rows:
            data = bytes(row.raw)
            digest = hashlib.sha256(data).hexdigest()
            if digest not in known:
                conn.execute(
                    raws.insert().values(
                        digest=digest,
                        data=data,
                        size=len(data),
                        received_at=row.received_at or datetime.now(UTC),
                    )
                )
                known.add(digest)
            conn.execute(
                deliveries.update().where(deliveries.c.id == row.id).values(raw_digest=digest)
            )
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("raw", sa.LargeBinary(), nullable=True))
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "UPDATE deliveries SET raw = (SELECT data FROM raw_messages"
            " WHERE raw_messages.digest = deliveries.raw_digest)"
        )
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index(op.f("ix_deliveries_raw_digest"))
        batch.drop_constraint(op.f("fk_deliveries_raw_digest_raw_messages"), type_="foreignkey")
        batch.drop_column("raw_digest")
    op.drop_table("raw_messages")
