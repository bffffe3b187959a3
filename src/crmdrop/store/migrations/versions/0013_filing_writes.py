"""Less for the database to do per filing (issue #12, two PostgreSQL workers).

- `contact_terms` loses its foreign keys: it is a search index derived from the contacts
  (written with a contact, deleted before it, rebuilt by `reindex_contact`), and each of
  its rows — several per new contact — made PostgreSQL run two foreign-key checks, one of
  them a `FOR KEY SHARE` lock on the account's row, which every worker takes.
- `note_contacts` loses `ix_note_contacts_contact_id`: `ix_note_contacts_contact_note`
  (contact, note) answers everything it did, and each link paid for both.
- `contacts` loses `ix_contacts_account_id`: `ix_contacts_account_activity` (account,
  last activity, id) begins with the account and answers the same look-ups, and a filing
  writes a new version of each contact it is filed under (its last activity), which is
  an entry in every index of `contacts`.
- `notes` loses `ix_notes_account_message_id`: no query reads notes by `message_id`
  (threads and duplicates go by `message_key`, the unique key), yet every note paid for
  it, and PostgreSQL without statistics for `notes` chose it, on `account_id` alone, for
  the batch's duplicate check: every note of the account read, twice a batch.
- `ix_deliveries_status_due` ends with the id too: the claim's order (due time, then id)
  is then the index's, so PostgreSQL reads the first batch of due rows in order and stops,
  where it read every queued delivery and sorted them, on each claim (a backlog of
  100,000 sorted for each batch of 32).
- PostgreSQL: `deliveries` keeps a fifth of each new page free (fillfactor 80), so that
  the claim (attempts, claimed_at: no indexed column) is a HOT update, written beside the
  row without new entries in its six indexes; the note's text and the processing record
  are compressed with LZ4 rather than pglz (far less CPU for the same data), where the
  server has it (PostgreSQL 14 and later, built with LZ4).

Revision ID: 0013
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None

# Compressed with LZ4 where available: the columns written by every filing that are
# large enough for PostgreSQL to compress (a note's text, the processing record).
_LZ4_COLUMNS = (
    ("notes", "body"),
    ("notes", "own_text"),
    ("notes", "chain"),
    ("deliveries", "plan"),
)


def upgrade() -> None:
    _contact_terms_foreign_keys(drop=True)
    with op.batch_alter_table("note_contacts") as batch:
        batch.drop_index("ix_note_contacts_contact_id")
    op.drop_index("ix_notes_account_message_id", table_name="notes")
    op.drop_index("ix_contacts_account_id", table_name="contacts")
    _status_due(["status", "next_attempt_at", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries SET (fillfactor = 80)")
        if _has_lz4():
            for table, column in _LZ4_COLUMNS:
                op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        if _has_lz4():
            for table, column in _LZ4_COLUMNS:
                op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION default")
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
    _status_due(["status", "next_attempt_at"])
    op.create_index("ix_contacts_account_id", "contacts", ["account_id"])
    op.create_index("ix_notes_account_message_id", "notes", ["account_id", "message_id"])
    with op.batch_alter_table("note_contacts") as batch:
        batch.create_index("ix_note_contacts_contact_id", ["contact_id"])
    _contact_terms_foreign_keys(drop=False)


def _status_due(columns: list[str]) -> None:
    op.drop_index("ix_deliveries_status_due", table_name="deliveries")
    op.create_index("ix_deliveries_status_due", "deliveries", columns)


def _has_lz4() -> bool:
    """PostgreSQL 14+ built with LZ4 lists it among the values of default_toast_compression."""
    found = op.get_bind().execute(
        sa.text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
    )
    return bool(found.scalar())


def _contact_terms_foreign_keys(*, drop: bool) -> None:
    """Drop (or add back) the foreign keys of `contact_terms`. PostgreSQL alters the table
    in place; SQLite, whose foreign keys have no name to drop, gets the table anew."""
    if op.get_bind().dialect.name == "postgresql":
        if drop:
            for name in _foreign_key_names("contact_terms"):
                op.drop_constraint(name, "contact_terms", type_="foreignkey")
        else:
            op.create_foreign_key(None, "contact_terms", "accounts", ["account_id"], ["id"])
            op.create_foreign_key(None, "contact_terms", "contacts", ["contact_id"], ["id"])
        return
    account = sa.ForeignKey("accounts.id") if not drop else None
    contact = sa.ForeignKey("contacts.id") if not drop else None
    op.create_table(
        "contact_terms_new",
        sa.Column("account_id", sa.Integer(), *([account] if account else []), nullable=False),
        sa.Column("term", sa.String(length=320), nullable=False),
        sa.Column("contact_id", sa.Integer(), *([contact] if contact else []), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "term", "contact_id"),
    )
    op.execute(
        "INSERT INTO contact_terms_new (account_id, term, contact_id) "
        "SELECT account_id, term, contact_id FROM contact_terms"
    )
    op.drop_index("ix_contact_terms_contact_term", table_name="contact_terms")
    op.drop_table("contact_terms")
    op.rename_table("contact_terms_new", "contact_terms")
    op.create_index("ix_contact_terms_contact_term", "contact_terms", ["contact_id", "term"])


def _foreign_key_names(table: str) -> list[str]:
    inspector = sa.inspect(op.get_bind())
    return [fk["name"] for fk in inspector.get_foreign_keys(table) if fk["name"]]
