"""The SQLite worker's parse process (`worker.ParseAhead`, `crmdrop.parseahead`): the next
batch, claimed before this one is filed, parsed meanwhile by a second process — every
message filed once and as the worker alone files it, whatever happens to that process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crmdrop import parseahead, worker
from crmdrop.config import Settings, load_settings
from crmdrop.receive.service import Rcpt, Receiver
from crmdrop.store.db import Database
from crmdrop.store.inbound import Claim
from crmdrop.store.models import Attachment, Delivery, Note
from crmdrop.worker import BATCH, ParseAhead, Progress, file_next
from tests.conftest import SERVER_ENV
from tests.support import children_running, make_message, receiver_with_owner, wait_for

MESSAGES = 2 * BATCH + 5  # three batches: two of them claimed ahead


@dataclass
class Store:
    db: Database
    settings: Settings
    receiver: Receiver
    rcpt: Rcpt  # u@mycorp.example's note dropbox


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    settings = load_settings(data_dir=tmp_path, domain="dropbox.test")
    db = Database(settings.db_url)
    yield Store(db, settings, *receiver_with_owner(db, settings))
    db.dispose()


@pytest.fixture
def ahead() -> Iterator[ParseAhead]:
    made = ParseAhead()
    yield made
    made.process.close()


def _queue(store: Store, count: int) -> None:
    for n in range(count):
        raw = make_message(
            from_="u@mycorp.example", to=[f"c{n}@client{n}.example"], subject=f"message {n}"
        ).as_bytes()
        verdict = store.receiver.accept(
            mail_from="u@mycorp.example", rcpts=[store.rcpt], raw=raw, protocol="smtp", peer="t"
        )
        assert verdict.replies[0].startswith("250"), verdict.replies


def _filed(db: Database) -> list[tuple[str, str, int]]:
    """(the delivery's subject, its note's subject, its attempts), in queue order."""
    with db.reading() as session:
        rows = session.execute(
            sa.select(Delivery.subject, Note.subject, Delivery.attempts)
            .join(Note, Note.id == Delivery.note_id)
            .where(Delivery.status == "filed")
            .order_by(Delivery.id)
        ).all()
    return [(a, b, n) for a, b, n in rows]


def _drain(db: Database, settings: Settings, ahead: ParseAhead | None) -> None:
    while file_next(db, settings, None, ahead) is not Progress.IDLE:
        pass


def test_a_burst_parsed_ahead_is_filed_once_each_as_without_it(
    store: Store, ahead: ParseAhead
) -> None:
    db, settings = store.db, store.settings
    _queue(store, MESSAGES)
    assert file_next(db, settings, None, ahead) is Progress.MORE
    assert ahead.claim is not None and len(ahead.claim.deliveries) == BATCH  # the next one
    assert ahead.process.pid is not None  # in the parse process meanwhile
    _drain(db, settings, ahead)
    expected = [(f"message {n}", f"message {n}", 1) for n in range(MESSAGES)]
    assert _filed(db) == expected
    _queue(store, MESSAGES)  # and the same burst without it
    _drain(db, settings, None)
    assert _filed(db)[MESSAGES:] == expected


def test_a_parse_process_that_dies_leaves_its_batch_to_the_worker(
    store: Store,
    ahead: ParseAhead,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db, settings = store.db, store.settings
    _queue(store, MESSAGES)
    file_next(db, settings, None, ahead)
    first = ahead.process.pid
    assert first is not None and ahead.claim is not None
    os.kill(first, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="crmdrop.parseahead"):
        _drain(db, settings, ahead)
    assert "the parse process failed" in caplog.text
    assert [n for *_, n in _filed(db)] == [1] * MESSAGES  # every one filed, at the first try
    assert ahead.process.pid not in (None, first)  # the third batch went to a new one


def test_stopping_gives_back_the_batch_claimed_ahead(store: Store, ahead: ParseAhead) -> None:
    db, settings = store.db, store.settings
    _queue(store, MESSAGES)
    file_next(db, settings, None, ahead)
    assert ahead.claim is not None
    held = [d.id for d in ahead.claim.deliveries]
    ahead.close(db)
    with db.reading() as session:
        rows = session.execute(
            sa.select(Delivery.status, Delivery.claimed_at, Delivery.attempts).where(
                Delivery.id.in_(held)
            )
        ).all()
    assert rows == [("queued", None, 0)] * BATCH  # free, and the attempt not counted
    _drain(db, settings, None)
    assert len(_filed(db)) == MESSAGES


def test_a_parse_that_raises_in_the_child_comes_back_as_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child's own loop, in this process: a failing message is answered with its
    traceback and does not stop the others."""

    def parse(raw: bytes) -> object:
        if b"bad" in raw:
            raise ValueError("unreadable")
        return raw.decode()

    monkeypatch.setattr(parseahead, "parse_message", parse)
    answers = parseahead.parse_batch([b"good", b"bad", b"also good"])
    assert [a.message for a in answers] == ["good", None, "also good"]
    assert answers[1].summary == "ValueError: unreadable"
    assert "Traceback" in answers[1].error and "unreadable" in answers[1].error


def test_a_large_message_claimed_ahead_waits_unloaded_and_is_filed_whole(
    store: Store, ahead: ParseAhead
) -> None:
    """Over `CHILD_MAX_BYTES` a message is parsed by the worker, and while its batch
    waits for its turn the worker does not hold its bytes (loaded again when taken)."""
    db, settings = store.db, store.settings
    _queue(store, BATCH + 1)
    payload = bytes(range(256)) * 6000  # 1.5 MB
    big = make_message(
        from_="u@mycorp.example",
        to=["big@client.example"],
        subject="large",
        attachments=[("big.bin", payload)],
    )
    verdict = store.receiver.accept(
        mail_from="u@mycorp.example",
        rcpts=[store.rcpt],
        raw=big.as_bytes(),
        protocol="smtp",
        peer="t",
    )
    assert verdict.replies[0].startswith("250")
    assert file_next(db, settings, None, ahead) is Progress.MORE
    assert ahead.claim is not None
    waiting = {d.subject: d.raw for d in ahead.claim.deliveries}
    assert waiting["large"] is None and waiting[f"message {BATCH}"] is not None
    _drain(db, settings, ahead)
    with db.reading() as session:
        stored = session.execute(sa.select(Attachment.filename, Attachment.data)).all()
    assert [(name, bytes(data)) for name, data in stored] == [("big.bin", payload)]
    assert len(_filed(db)) == BATCH + 2


def test_a_sqlite_worker_files_a_burst_with_its_parse_process_and_stops_it(
    store: Store, tmp_path: Path
) -> None:
    """`crmdrop worker` on SQLite, a queue of three batches and more: all filed once,
    with a parse process beside the worker, which ends with it."""
    _queue(store, 3 * MESSAGES)
    env = {
        **os.environ,
        **SERVER_ENV,
        "CRMDROP_DATA_DIR": str(tmp_path),
        "CRMDROP_DATABASE_URL": store.settings.db_url,
    }
    worker = subprocess.Popen([sys.executable, "-m", "crmdrop", "worker"], env=env)
    try:
        wait_for(lambda: len(_filed(store.db)) == 3 * MESSAGES, what="the burst filed")
        assert [n for *_, n in _filed(store.db)] == [1] * (3 * MESSAGES)
        children = children_running(worker.pid, "crmdrop.parseahead")
        assert len(children) == 1
    finally:
        worker.terminate()
        worker.wait(30)
    wait_for(lambda: not Path(f"/proc/{children[0]}").exists(), what="the parse process gone")


def test_a_claim_ahead_that_fails_leaves_this_batch_to_be_filed(
    store: Store, ahead: ParseAhead, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, settings = store.db, store.settings
    _queue(store, MESSAGES)
    real = worker._claim
    calls: list[int] = []

    def claim_once(*args: Any) -> Claim:
        calls.append(1)
        if len(calls) == 2:  # the claim ahead
            raise sa.exc.OperationalError("claim", {}, Exception("database is away"))
        return real(*args)

    monkeypatch.setattr(worker, "_claim", claim_once)
    assert file_next(db, settings, None, ahead) is Progress.MORE
    assert len(calls) == 2 and ahead.claim is None
    assert len(_filed(db)) == BATCH  # this batch filed all the same
    _drain(db, settings, ahead)
    assert len(_filed(db)) == MESSAGES
