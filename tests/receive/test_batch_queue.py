"""The group commit queues its batch at once (`store.inbound.add_deliveries`; on
PostgreSQL two pipelined round trips, not two per message): each message's bytes stored
once, each delivery's id handed back in order — so every SMTP reply names its own
message's delivery, which the tests read back from the database."""

from __future__ import annotations

import dataclasses
import smtplib
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from crmdrop.config import Settings
from crmdrop.receive.service import TEMPFAIL
from crmdrop.spool import Spool
from crmdrop.store import accounts
from crmdrop.store.db import Database, pipelined
from crmdrop.store.inbound import NewDelivery, add_deliveries, add_delivery
from tests.conftest import SERVER_ENV, OwnServer, own_server
from tests.support import make_message, receiver_with_owner

NOW = datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=UTC)


def _new(account_id: int, user_id: int, rcpt: str) -> NewDelivery:
    return NewDelivery(
        account_id, user_id, "note", rcpt, "u@mycorp.example", "smtp", "t", None, "s", "a"
    )


def _on_disk(data: bytes) -> Spool:
    spool = Spool(threshold=16)  # past 16 bytes: a file, streamed into the database
    spool.write(data)
    assert spool.on_disk
    return spool


def test_a_batch_queued_at_once_stores_what_one_at_a_time_stores(
    store: tuple[Database, Settings],
) -> None:
    db, _ = store
    db.migrate()
    with db.writing() as session:
        user = accounts.add_user(session, "u@mycorp.example", name="U", account="acme")
        account_id, user_id = user.account_id, user.id
    first, second = (_new(account_id, user_id, f"dropbox-{n}@dropbox.test") for n in "ab")
    shared = Spool.of(b"one message to two dropboxes")
    same = b"the same bytes in two messages"
    batch = [
        (first, shared),
        (second, shared),
        (first, Spool.of(same)),
        (second, Spool.of(same)),
        (first, _on_disk(b"a large message, spooled to a file")),
    ]
    with db.write_connection() as conn:
        with pipelined(conn):
            ids = add_deliveries(conn, batch[:3], now=NOW)
        # With a spooled message (COPY, which a pipeline refuses), as the accept path does.
        with pipelined(conn, copies=True):
            ids += add_deliveries(conn, batch[3:], now=NOW)
    with db.write_connection() as conn:  # the same, a row at a time, for comparison
        one_by_one = [add_delivery(conn, new, raw, now=NOW) for new, raw in batch]
    assert ids == sorted(ids) and len(set(ids)) == 5 and max(ids) < min(one_by_one)
    with db.read_connection() as conn:
        raws = conn.execute(text("SELECT count(*) FROM raw_messages")).scalar_one()
        rows = conn.execute(
            text(
                "SELECT d.*, r.data AS bytes FROM deliveries d"
                " JOIN raw_messages r ON r.digest = d.raw_digest ORDER BY d.id"
            )
        ).mappings()
        found = {row["id"]: {k: v for k, v in row.items() if k != "id"} for row in rows}
    assert raws == 3  # each message's bytes once, the same bytes once
    for (new, raw), batched, single in zip(batch, ids, one_by_one, strict=True):
        assert found[batched] == found[single]  # every column, the bytes too
        assert (found[batched]["rcpt_to"], bytes(found[batched]["bytes"])) == (
            new.rcpt_to,
            raw.getvalue(),
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OwnServer]:
    env = {**SERVER_ENV, "CRMDROP_DATA_DIR": str(tmp_path)}
    yield from own_server(request.param, tmp_path, env, worker=False)


def test_every_reply_names_its_own_messages_delivery_in_shared_commits(
    server: OwnServer,
) -> None:
    user = server.cli.add_user(f"owner-{uuid.uuid4().hex[:8]}@mycorp.example", "acme")
    sender, box = user["email"], user["dropbox"]["note"]
    port = server.server.smtp_port

    def session(n: int) -> list[tuple[str, int]]:
        """Five messages on one connection; (subject, the id its reply named) each."""
        sent = []
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("tests.example")
            for k in range(5):
                subject = f"message {n}.{k}"
                raw = make_message(from_=sender, to=["jane@client.example"], subject=subject)
                client.mail(sender)
                client.rcpt(box)
                code, reply = client.data(raw.as_bytes())
                assert code == 250, reply
                sent.append((subject, int(reply.rsplit(b" ", 1)[1])))
        return sent

    engine = create_engine(server.url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        for _ in range(5):  # until some commit carried several messages
            with ThreadPoolExecutor(max_workers=8) as pool:
                replies = [one for sent in pool.map(session, range(8)) for one in sent]
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT id, subject, received_at FROM deliveries"))
                stored = {row.id: (row.subject, row.received_at) for row in rows}
            assert {stored[i][0] for _, i in replies} == {s for s, _ in replies}
            assert all(stored[i][0] == subject for subject, i in replies)
            # One batch, one timestamp: the largest commit of the round.
            if max(Counter(at for _, at in stored.values()).values()) > 1:
                return
        raise AssertionError("no commit carried more than one message in five rounds")
    finally:
        engine.dispose()


def test_a_failed_batch_is_committed_one_by_one_and_only_the_bad_message_answers_451(
    store: tuple[Database, Settings],
) -> None:
    """One message of a batch breaks the shared transaction (its account deleted since
    RCPT: a foreign key; on PostgreSQL inside the pipeline); the others are then stored
    each on its own, their replies naming their own deliveries."""
    db, settings = store
    receiver, rcpt = receiver_with_owner(db, settings)
    subjects = ["first", "broken", "third"]
    sender, client = "u@mycorp.example", "jane@client.example"
    items = [
        receiver.prepare(
            mail_from=sender,
            rcpts=[rcpt],
            raw=Spool.of(make_message(from_=sender, to=[client], subject=s).as_bytes()),
            protocol="smtp",
            peer="t",
        )
        for s in subjects
    ]
    items[1].rows = [(dataclasses.replace(items[1].rows[0][0], account_id=999_999), None)]
    receiver.commit(items)
    assert items[1].replies == [TEMPFAIL]
    with db.read_connection() as conn:
        stored = dict(conn.execute(text("SELECT id, subject FROM deliveries")).all())
    named = {
        int(item.replies[0].rsplit(" ", 1)[1]): s
        for item, s in zip(items, subjects, strict=True)
        if s != "broken"
    }
    assert stored == named
    assert sorted(stored.values()) == ["first", "third"]
