"""The worker on a queue filled before it runs, so that related messages meet in one
batch (SQLite decides a batch on one snapshot) — on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from email.utils import make_msgid
from pathlib import Path

import pytest

from crmdrop.config import Settings, load_settings
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.export import export_account
from crmdrop.worker import process_one
from tests.support import make_message, pg_database


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
    assert {(d["status"], d["attempts"]) for d in data["deliveries"]} == {("filed", 0)}


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
