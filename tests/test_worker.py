"""The worker on a queue filled before it runs, so that related messages meet in one
batch (SQLite decides a batch on one snapshot) — on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import make_msgid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from crmdrop import worker
from crmdrop.config import Settings, load_settings
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts
from crmdrop.store import db as store_db
from crmdrop.store.contacts import ContactEdit, create_contact, delete_contact
from crmdrop.store.db import Database
from crmdrop.store.export import export_account
from crmdrop.store.inbound import LEASE, claim_due
from crmdrop.store.models import Attachment, Contact, ContactEmail, Delivery, Note, note_contacts
from crmdrop.worker import Progress, file_next, process_one, worker_started
from tests.support import PG_URL, make_message, pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, Settings]]:
    def open_db(url: str | None) -> tuple[Database, Settings]:
        settings = load_settings(data_dir=tmp_path, domain="dropbox.test", database_url=url)
        db = Database(settings.db_url)
        db.migrate()
        return db, settings

    if request.param == "postgresql":
        with pg_database() as url:
            db, settings = open_db(url)
            yield db, settings
            db.dispose()
    else:
        db, settings = open_db(None)
        yield db, settings
        db.dispose()


def queue(receiver: Receiver, to: str, raw: bytes, sender: str) -> None:
    reply, rcpt = receiver.check_recipient(to)
    assert rcpt is not None, reply
    verdict = receiver.accept(mail_from=sender, rcpts=[rcpt], raw=raw, protocol="smtp", peer="t")
    assert verdict.replies[0].startswith("250"), verdict.replies


def test_one_message_to_two_case_dropboxes_and_its_reply_make_one_case(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    with db.writing() as session:
        alice = accounts.add_user(session, "alice@mycorp.example", name="A", account="acme")
        bob = accounts.add_user(session, "bob@mycorp.example", name="B", account="acme")
        boxes = [f"dropbox-{u.token}-case@dropbox.test" for u in (alice, bob)]
    receiver = Receiver(db, settings)
    # The customer replies to all: both colleagues and both their case dropboxes.
    first = make_message(
        from_="buyer@client.example",
        to=["alice@mycorp.example", "bob@mycorp.example"],
        cc=boxes,
        subject="Broken pump",
    )
    for box in boxes:
        queue(receiver, box, first.as_bytes(), "buyer@client.example")
    reply = make_message(
        from_="alice@mycorp.example",
        to=["buyer@client.example"],
        subject="Re: Broken pump",
        message_id=make_msgid(domain="test.example"),
        headers={"In-Reply-To": first["Message-ID"], "References": first["Message-ID"]},
    )
    queue(receiver, boxes[0], reply.as_bytes(), "alice@mycorp.example")
    while process_one(db, settings):
        pass
    with db.reading() as session:
        data = export_account(session, "acme")
    assert [c["ref"] for c in data["cases"]] == ["CA1"]
    assert sorted(d["status"] for d in data["deliveries"]) == ["duplicate", "filed", "filed"]
    assert [n["cases"] for n in data["notes"]] == [["CA1"], ["CA1"]]


def drain_with_workers(db: Database, settings: Settings, workers: int) -> None:
    """Several workers at once, as several `crmdrop worker` processes would run."""

    def run() -> None:
        while process_one(db, settings):
            pass

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)


def test_concurrent_workers_number_cases_without_a_gap_or_a_retry(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    with db.writing() as session:
        owner = accounts.add_user(session, "olive@mycorp.example", name="O", account="acme")
        box = f"dropbox-{owner.token}-case@dropbox.test"
    receiver = Receiver(db, settings)
    for n in range(40):
        msg = make_message(from_="olive@mycorp.example", to=[f"c{n}@client.example"])
        queue(receiver, box, msg.as_bytes(), "olive@mycorp.example")
    drain_with_workers(db, settings, 4)
    with db.reading() as session:
        data = export_account(session, "acme")
    assert sorted(int(c["ref"][2:]) for c in data["cases"]) == list(range(1, 41))
    assert {(d["status"], d["attempts"]) for d in data["deliveries"]} == {("filed", 1)}


def test_one_message_to_two_task_addresses_of_one_user_makes_one_task(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    with db.writing() as session:
        owner = accounts.add_user(session, "tom@mycorp.example", name="T", account="acme")
        token = owner.token
    receiver = Receiver(db, settings)
    for n in range(10):
        msg = make_message(from_="tom@mycorp.example", to=["t@client.example"], subject=f"t{n}")
        for box in (f"dropbox-{token}-task@dropbox.test", f"dropbox-{token}-task+a@dropbox.test"):
            queue(receiver, box, msg.as_bytes(), "tom@mycorp.example")
    drain_with_workers(db, settings, 4)
    with db.reading() as session:
        data = export_account(session, "acme")
    assert sorted(t["title"] for t in data["tasks"]) == sorted(f"t{n}" for n in range(10))
    assert {d["status"] for d in data["deliveries"]} <= {"filed", "duplicate"}


def test_a_message_no_worker_ever_finishes_is_parked_not_retried_forever(
    store: tuple[Database, Settings],
) -> None:
    """A worker killed (or hung) while filing leaves only its claim behind."""
    db, settings = store
    with db.writing() as session:
        owner = accounts.add_user(session, "pat@mycorp.example", name="P", account="acme")
        box = f"dropbox-{owner.token}@dropbox.test"
    receiver = Receiver(db, settings)
    msg = make_message(from_="pat@mycorp.example", to=["p@client.example"])
    queue(receiver, box, msg.as_bytes(), "pat@mycorp.example")
    now = datetime.now(UTC)
    for attempt in range(settings.max_attempts):
        at = now + attempt * (LEASE + timedelta(seconds=1))  # each claim outlives its lease
        with db.writing() as session:
            claimed, parked, _ = claim_due(
                session,
                at,
                limit=1,
                max_bytes=10**6,
                max_attempts=settings.max_attempts,
                skip_locked=not db.is_sqlite,
            )
        assert (len(claimed), parked) == (1, 0)  # ...and the worker dies with it
    with db.writing() as session:
        claimed, parked, _ = claim_due(
            session,
            now + settings.max_attempts * (LEASE + timedelta(seconds=1)),
            limit=1,
            max_bytes=10**6,
            max_attempts=settings.max_attempts,
            skip_locked=not db.is_sqlite,
        )
    assert (claimed, parked) == ([], 1)
    with db.reading() as session:
        (row,) = export_account(session, "acme")["deliveries"]
    assert row["status"] == "failed"
    assert "the worker stopped while processing it" in row["reason"]


def test_a_starting_sqlite_worker_frees_what_a_crashed_one_had_claimed(tmp_path: Path) -> None:
    """Only one worker runs on SQLite, so any claim left is a crashed one's. (PostgreSQL
    workers share the queue: there a claim expires with its lease, as tested above.)"""
    settings = load_settings(data_dir=tmp_path, domain="dropbox.test")
    db = Database(settings.db_url)
    db.migrate()
    with db.writing() as session:
        owner = accounts.add_user(session, "sam@mycorp.example", name="S", account="acme")
        box = f"dropbox-{owner.token}@dropbox.test"
    queue(
        Receiver(db, settings),
        box,
        make_message(from_="sam@mycorp.example", to=["s@client.example"]).as_bytes(),
        "sam@mycorp.example",
    )
    with db.writing() as session:  # the crashed worker's claim
        claim_due(
            session, datetime.now(UTC), limit=1, max_bytes=10**6, max_attempts=6, skip_locked=False
        )
    assert process_one(db, settings) is False  # claimed: not due for anyone else
    worker_started(db)
    while process_one(db, settings):
        pass
    with db.reading() as session:
        (row,) = export_account(session, "acme")["deliveries"]
    db.dispose()
    assert (row["status"], row["attempts"]) == ("filed", 2)


def test_a_batch_says_whether_the_worker_must_claim_again_at_once(
    store: tuple[Database, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a batch that took everything due the worker waits to be woken (no empty
    claim to learn that nothing is left); it claims again at once when the claim left
    deliveries due or the batch deferred one (a reply decided after its original)."""
    db, settings = store
    with db.writing() as session:
        user = accounts.add_user(session, "alice@mycorp.example", name="A", account="acme")
        box = f"dropbox-{user.token}@dropbox.test"
    receiver = Receiver(db, settings)

    def send(subject: str, **headers: str) -> str:
        msg = make_message(
            from_="alice@mycorp.example",
            to=["buyer@client.example"],
            subject=subject,
            message_id=make_msgid(domain="test.example"),
            headers=headers,
        )
        queue(receiver, box, msg.as_bytes(), "alice@mycorp.example")
        return str(msg["Message-ID"])

    def steps() -> list[Progress]:
        seen = [file_next(db, settings)]
        while seen[-1] is not Progress.IDLE:
            seen.append(file_next(db, settings))
        return seen

    send("alone")
    assert steps() == [Progress.DRAINED, Progress.IDLE]
    first = send("first")
    send("reply", **{"In-Reply-To": first})
    assert steps() == [Progress.MORE, Progress.DRAINED, Progress.IDLE]
    with monkeypatch.context() as patch:
        patch.setattr(worker, "BATCH_BYTES", 1)  # a claim stops at one message
        send("one")
        send("two")
        assert steps() == [Progress.MORE, Progress.DRAINED, Progress.IDLE]
    with monkeypatch.context() as patch:
        patch.setattr(worker, "BATCH", 2)
        for subject in ("three", "four", "five"):
            send(subject)
        assert steps() == [Progress.MORE, Progress.DRAINED, Progress.IDLE]
        send("six")
        send("seven")  # a full batch that took all: the claim saw nothing past it
        assert steps() == [Progress.DRAINED, Progress.IDLE]
    with db.reading() as session:
        statuses = [d["status"] for d in export_account(session, "acme")["deliveries"]]
    assert statuses == ["filed"] * 10


def test_a_pooled_postgresql_connection_that_died_while_idle_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections are not pinged at every checkout (a round trip and a transaction
    each), only after sitting idle: one the server dropped meanwhile (a restart) is
    replaced, not handed out."""
    with pg_database() as url:
        db = Database(url)
        db.migrate()
        with db.reading() as session:
            assert session.scalar(sa.text("SELECT 1")) == 1
        monkeypatch.setattr(store_db, "PING_AFTER_IDLE", 0.0)  # every pooled one is "idle"
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [url.rsplit("/", 1)[1]],
            )
        with db.reading() as session:
            assert session.scalar(sa.text("SELECT 1")) == 1
        db.dispose()


def test_a_sqlite_writer_waits_for_the_write_lock_and_takes_it_once_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers take SQLite's write lock themselves (`BEGIN IMMEDIATE`, tried again a
    fraction of a millisecond later at first): one waits while another process holds
    the lock, goes on once it is free, and gives up past the busy timeout as before."""
    settings = load_settings(data_dir=tmp_path, domain="dropbox.test", database_url=None)
    db = Database(settings.db_url)
    db.migrate()
    assert db.sqlite_file is not None
    holder = sqlite3.connect(db.sqlite_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    wrote = threading.Event()

    def write() -> None:
        with db.writing() as session:
            session.execute(sa.text("CREATE TABLE IF NOT EXISTS t (x)"))
        wrote.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not wrote.wait(0.3)  # the lock is held: the writer waits
    holder.execute("COMMIT")
    writer.join(timeout=30)
    assert wrote.is_set()
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT", 0.2)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sa.exc.OperationalError, match="locked"), db.writing() as session:
        session.execute(sa.text("SELECT 1"))
    holder.execute("ROLLBACK")
    holder.close()
    db.dispose()


def test_a_large_message_and_a_small_one_in_one_batch_are_both_filed_whole(
    store: tuple[Database, Settings],
) -> None:
    """The batch load carries a small raw message in its own rows (binary on PostgreSQL)
    and reads one over its inline limit in pieces: both reach the parser whole."""
    db, settings = store
    with db.writing() as session:
        user = accounts.add_user(session, "lee@mycorp.example", name="L", account="acme")
        box = f"dropbox-{user.token}@dropbox.test"
    receiver = Receiver(db, settings)
    payload = bytes(range(256)) * 1600  # 400 KB: over the inline limit (256 KiB)
    for subject, attachments in (("small", None), ("large", [("big.bin", payload)])):
        msg = make_message(
            from_="lee@mycorp.example",
            to=["l@client.example"],
            subject=subject,
            attachments=attachments,
        )
        queue(receiver, box, msg.as_bytes(), "lee@mycorp.example")
    while process_one(db, settings):
        pass
    with db.reading() as session:
        data = export_account(session, "acme")
        stored = session.execute(sa.select(Attachment.filename, Attachment.data)).all()
    assert [d["status"] for d in data["deliveries"]] == ["filed", "filed"]
    assert sorted(n["subject"] for n in data["notes"]) == ["large", "small"]
    assert [(name, bytes(content)) for name, content in stored] == [("big.bin", payload)]


def test_a_batch_writes_its_new_notes_and_contacts_at_its_end_each_on_its_own_id(
    store: tuple[Database, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The batch's new notes and contacts take their ids beforehand and are written at its
    end (`BatchWrites.deferred`), except a note with attachments, written at once for
    them to refer to: in one batch, with a contact the web app made and removed at the
    top of the table, each note and contact gets an id of its own, links and attachments
    go to the right ones, and the batch is not applied one at a time."""
    db, settings = store
    with db.writing() as session:
        user = accounts.add_user(session, "lee@mycorp.example", name="L", account="acme")
        box = f"dropbox-{user.token}@dropbox.test"
        account_id = user.account_id
    with db.writing() as session:  # a contact at the top, removed: its id is free again
        edit = ContactEdit("Gone", ["gone@client.example"], None)
        made = create_contact(session, account_id, edit, now=datetime.now(UTC))
        delete_contact(session, account_id, made.id)
    receiver = Receiver(db, settings)
    letters = ("a", "b", "c", "d")
    for letter in letters:
        msg = make_message(
            from_="lee@mycorp.example",
            to=[f"{letter}@client.example"],
            subject=f"note {letter}",
            attachments=[(f"{letter}.bin", letter.encode() * 100)] if letter in "bd" else None,
        )
        queue(receiver, box, msg.as_bytes(), "lee@mycorp.example")
    with caplog.at_level(logging.WARNING, logger="crmdrop.worker"):
        assert file_next(db, settings) is not Progress.IDLE
    assert "applying one at a time" not in caplog.text
    with db.reading() as session:
        linked = session.execute(
            sa.select(Note.id, Note.subject, ContactEmail.email, Contact.created_by_delivery_id)
            .join(note_contacts, note_contacts.c.note_id == Note.id)
            .join(Contact, Contact.id == note_contacts.c.contact_id)
            .join(ContactEmail, ContactEmail.contact_id == Contact.id)
            .order_by(Note.subject)
        ).all()
        files = session.execute(
            sa.select(Note.subject, Attachment.filename).join(Note, Note.id == Attachment.note_id)
        ).all()
        statuses = session.scalars(sa.select(Delivery.status)).all()
    assert [(subject, email) for _, subject, email, _ in linked] == [
        (f"note {x}", f"{x}@client.example") for x in letters
    ]
    assert len({note_id for note_id, *_ in linked}) == 4
    assert len({delivery for *_, delivery in linked}) == 4  # each made by its own delivery
    assert sorted(files) == [("note b", "b.bin"), ("note d", "d.bin")]
    assert statuses == ["filed"] * 4
