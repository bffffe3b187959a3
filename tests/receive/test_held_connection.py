"""The group commit's writer keeps one connection for all its commits (`HeldConnection`);
a failure on it drops it, the batch is tried again on pooled connections (nothing lost,
no 451 for a connection that merely died), and the next commit opens a fresh one."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from crmdrop.config import load_settings
from crmdrop.dropbox.address import DropboxKind, dropbox_addresses
from crmdrop.receive.service import Prepared, Receiver
from crmdrop.spool import Spool
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.models import Delivery


def _message(receiver: Receiver, address: str, n: int) -> Prepared:
    reply, rcpt = receiver.check_recipient(address)
    assert rcpt is not None, reply
    raw = b"From: u@mycorp.example\r\nTo: c@client.example\r\nSubject: %d\r\n\r\nhi\r\n" % n
    return receiver.prepare(
        mail_from="u@mycorp.example", rcpts=[rcpt], raw=Spool.of(raw), protocol="lmtp", peer="x"
    )


def test_the_writer_keeps_one_connection_and_replaces_a_dead_one(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, domain="dropbox.test")
    db = Database(settings.db_url)
    db.migrate()
    with db.writing() as session:
        user = accounts.add_user(session, "u@mycorp.example", name="U", account="acme")
        address = dropbox_addresses(user.token, "dropbox.test")[DropboxKind.NOTE]
    receiver = Receiver(db, settings)
    held = receiver.held_connection()
    assert held is not None
    first = [_message(receiver, address, 1), _message(receiver, address, 2)]
    receiver.commit(first, held)
    kept = held._conn
    receiver.commit([_message(receiver, address, 3)], held)
    assert kept is not None and held._conn is kept  # the same connection, no checkout

    kept.connection.driver_connection.close()  # type: ignore[union-attr]  # it dies
    dead = [_message(receiver, address, 4)]
    receiver.commit(dead, held)
    assert dead[0].replies[0].startswith("250 2.0.0 OK: queued as")  # retried, pooled
    assert held._conn is None  # dropped ...
    receiver.commit([_message(receiver, address, 5)], held)
    assert held._conn is not None and held._conn is not kept  # ... and opened afresh
    held.close()
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 5
    assert all(item.replies[0].startswith("250") for item in first)
    db.dispose()
