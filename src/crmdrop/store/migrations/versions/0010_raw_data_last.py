"""SQLite: the raw message's bytes become the last column of raw_messages.

SQLite writes a `zeroblob(n)` without allocating it only when it is the record's last
field; in the middle of the row it is built in memory (25 MB for a 25 MB message, and a
copy). The accepting process inserts a zeroblob and fills it in chunks (issue #12), so
`data` moves to the end: added anew, copied, the old column dropped. PostgreSQL streams
the bytes by COPY, where the order does not matter; there the column is stored
uncompressed (mostly base64, it hardly compresses), so that the worker's reads by
slices fetch only the slice.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER TABLE raw_messages ALTER COLUMN data SET STORAGE EXTERNAL")
        return
    op.execute("ALTER TABLE raw_messages ADD COLUMN data_last BLOB NOT NULL DEFAULT x''")
    op.execute("UPDATE raw_messages SET data_last = data")
    op.execute("ALTER TABLE raw_messages DROP COLUMN data")
    op.execute("ALTER TABLE raw_messages RENAME COLUMN data_last TO data")


def downgrade() -> None:
    """The same columns in another order (SQLite); PostgreSQL: compressed again."""
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER TABLE raw_messages ALTER COLUMN data SET STORAGE EXTENDED")
