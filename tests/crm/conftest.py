"""A real database (SQLite and PostgreSQL) filled by the real pipeline: messages go
through the receiver's accept path and the worker's parse → decide → apply, and the
store functions of the web pages read and change the result."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crmdrop.config import Settings, load_settings
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.models import Delivery, User
from crmdrop.worker import process_one
from tests.support import pg_database

DOMAIN = "dropbox.test"


@dataclass
class Desk:
    """One user of an account, with what a test needs to file mail as them."""

    db: Database
    settings: Settings
    user_id: int
    account_id: int
    email: str
    token: str

    def box(self, kind: str = "") -> str:
        suffix = f"-{kind}" if kind else ""
        return f"dropbox-{self.token}{suffix}@{DOMAIN}"

    def file(self, msg: EmailMessage, kind: str = "", sender: str | None = None) -> int:
        """Send `msg` to one of the user's dropboxes and let the worker file it;
        the delivery id."""
        receiver = Receiver(self.db, self.settings)
        reply, rcpt = receiver.check_recipient(self.box(kind))
        assert rcpt is not None, reply
        verdict = receiver.accept(
            mail_from=sender or self.email,
            rcpts=[rcpt],
            raw=msg.as_bytes(),
            protocol="smtp",
            peer="test",
        )
        assert verdict.replies[0].startswith("250"), verdict.replies
        drain(self.db, self.settings)
        with self.db.reading() as session:
            found = session.scalar(
                select(func.max(Delivery.id)).where(Delivery.user_id == self.user_id)
            )
        assert found is not None
        return int(found)


def drain(db: Database, settings: Settings) -> None:
    while process_one(db, settings):
        pass


@dataclass
class Crm:
    db: Database
    settings: Settings

    def desk(self, email: str, account: str, timezone: str = "UTC") -> Desk:
        with self.db.writing() as session:
            user: User = accounts.add_user(
                session, email, name=email.split("@")[0].title(), account=account, timezone=timezone
            )
            return Desk(self.db, self.settings, user.id, user.account_id, user.email, user.token)


@pytest.fixture(params=["sqlite", "postgresql"])
def crm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Crm]:
    def open_db(url: str | None) -> Crm:
        settings = load_settings(data_dir=tmp_path, domain=DOMAIN, database_url=url)
        db = Database(settings.db_url)
        db.migrate()
        return Crm(db, settings)

    if request.param == "postgresql":
        with pg_database() as url:
            c = open_db(url)
            yield c
            c.db.dispose()
    else:
        c = open_db(None)
        yield c
        c.db.dispose()
