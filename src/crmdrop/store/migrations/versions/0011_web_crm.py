"""The web CRM: contacts' last activity, who created a case/opportunity, the actions
taken on a delivery (undo, never-a-contact, retry), and the indexes the pages read by.

Revision ID: 0011
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=True))
    # A contact's last activity: its newest note's filing time, else its creation.
    op.execute(
        "UPDATE contacts SET last_activity_at = COALESCE("
        "(SELECT MAX(notes.created_at) FROM notes JOIN note_contacts "
        "ON note_contacts.note_id = notes.id WHERE note_contacts.contact_id = contacts.id),"
        " contacts.created_at)"
    )
    with op.batch_alter_table("contacts") as batch:
        batch.alter_column("last_activity_at", nullable=False)
    for table in ("cases", "opportunities"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("created_by_delivery_id", sa.Integer(), nullable=True))
    op.create_table(
        "delivery_actions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("delivery_id", sa.Integer(), sa.ForeignKey("deliveries.id"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "contact_terms",
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("term", sa.String(length=320), primary_key=True),
        sa.Column("contact_id", sa.Integer(), sa.ForeignKey("contacts.id"), primary_key=True),
    )
    op.create_index("ix_contact_terms_contact_term", "contact_terms", ["contact_id", "term"])
    _index_existing_contacts()
    op.create_index("ix_delivery_actions_delivery_id", "delivery_actions", ["delivery_id"])
    op.create_index(
        "ix_contacts_account_activity", "contacts", ["account_id", "last_activity_at", "id"]
    )
    op.create_index("ix_contacts_created_by", "contacts", ["created_by_delivery_id"])
    op.create_index("ix_note_contacts_contact_note", "note_contacts", ["contact_id", "note_id"])
    op.create_index("ix_notes_delivery", "notes", ["delivery_id"])
    op.create_index("ix_deliveries_user", "deliveries", ["user_id", "id"])
    op.create_index("ix_deliveries_note", "deliveries", ["note_id"])
    op.create_index("ix_tasks_user_done", "tasks", ["user_id", "done", "due_date"])
    op.create_index("ix_tasks_note", "tasks", ["note_id"])
    op.create_index("ix_tasks_delivery", "tasks", ["delivery_id"])
    op.create_index("ix_case_contacts_contact", "case_contacts", ["contact_id"])
    op.create_index("ix_opportunity_contacts_contact", "opportunity_contacts", ["contact_id"])
    op.create_index("ix_task_contacts_contact", "task_contacts", ["contact_id"])
    op.create_index("ix_contacts_company", "contacts", ["company_id"])


def _index_existing_contacts() -> None:
    """Fill the search index for the contacts filed before it existed."""
    from crmdrop.store.search import terms_of

    conn = op.get_bind()
    emails: dict[int, list[str]] = {}
    for contact_id, email in conn.execute(sa.text("SELECT contact_id, email FROM contact_emails")):
        emails.setdefault(contact_id, []).append(email)
    rows = [
        {"a": account_id, "t": term, "c": contact_id}
        for contact_id, account_id, name in conn.execute(
            sa.text("SELECT id, account_id, name FROM contacts")
        )
        for term in terms_of(name, emails.get(contact_id, []))
    ]
    if rows:
        conn.execute(
            sa.text("INSERT INTO contact_terms (account_id, term, contact_id) VALUES (:a, :t, :c)"),
            rows,
        )


def downgrade() -> None:
    for name, table in (
        ("ix_contacts_company", "contacts"),
        ("ix_task_contacts_contact", "task_contacts"),
        ("ix_opportunity_contacts_contact", "opportunity_contacts"),
        ("ix_case_contacts_contact", "case_contacts"),
        ("ix_tasks_delivery", "tasks"),
        ("ix_tasks_note", "tasks"),
        ("ix_tasks_user_done", "tasks"),
        ("ix_deliveries_note", "deliveries"),
        ("ix_deliveries_user", "deliveries"),
        ("ix_notes_delivery", "notes"),
        ("ix_note_contacts_contact_note", "note_contacts"),
        ("ix_contacts_created_by", "contacts"),
        ("ix_contacts_account_activity", "contacts"),
    ):
        op.drop_index(name, table_name=table)
    op.drop_index("ix_contact_terms_contact_term", table_name="contact_terms")
    op.drop_table("contact_terms")
    op.drop_index("ix_delivery_actions_delivery_id", table_name="delivery_actions")
    op.drop_table("delivery_actions")
    for table in ("cases", "opportunities"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("created_by_delivery_id")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("last_activity_at")
