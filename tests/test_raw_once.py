"""The raw message is stored once, however many dropboxes it reaches; group commits are
bounded by bytes; a failing commit still answers every waiting session (SQLite and
PostgreSQL, real databases)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from crmdrop.config import Settings, load_settings
from crmdrop.receive.batch import GroupCommitter, take_batch
from crmdrop.receive.service import TEMPFAIL, Prepared, Receiver
from crmdrop.serve import purge_step
from crmdrop.spool import Spool
from crmdrop.store import accounts
from crmdrop.store.db import MIGRATIONS, Database
from crmdrop.store.models import Delivery, Note, RawMessage
from crmdrop.worker import process_one
from tests.support import make_message


def _boxes(db: Database, n: int) -> list[str]:
    with db.writing() as session:
        users = [
            accounts.add_user(session, f"u{i}@mycorp.example", name=f"U{i}", account="acme")
            for i in range(n)
        ]
        return [f"dropbox-{u.token}@dropbox.test" for u in users]


def test_a_message_to_three_dropboxes_keeps_its_bytes_once_and_each_delivery_reads_them(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    db.migrate()
    boxes = _boxes(db, 3)
    receiver = Receiver(db, settings)
    rcpts = [receiver.check_recipient(box)[1] for box in boxes]
    to = ["jane@client.example", "u1@mycorp.example", "u2@mycorp.example"]
    raw = make_message(from_="u0@mycorp.example", to=to).as_bytes()
    for _ in range(2):  # the sender's MTA sends it again: still one copy of the bytes
        verdict = receiver.accept(
            mail_from="u0@mycorp.example",
            rcpts=[r for r in rcpts if r is not None],
            raw=raw,
            protocol="smtp",
            peer="t",
        )
        assert all(r.startswith("250") for r in verdict.replies), verdict.replies
    with db.reading() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(RawMessage)) == 1
        deliveries = session.scalars(sa.select(Delivery)).all()
        assert len(deliveries) == 6
        assert all(d.raw == raw for d in deliveries)
    while process_one(db, settings):
        pass
    with db.reading() as session:
        statuses = sorted(d.status for d in session.scalars(sa.select(Delivery)))
    assert statuses == ["duplicate"] * 5 + ["filed"]


def test_migration_0007_moves_each_distinct_raw_message_once(
    store: tuple[Database, Settings],
) -> None:
    db, _settings = store
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.write_engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0011")  # the revision before 0007
        conn.commit()
    boxes = _boxes(db, 1)
    assert boxes
    now = datetime.now(UTC)
    with db.write_engine.begin() as conn:
        user_id, account_id = conn.execute(sa.text("SELECT id, account_id FROM users")).one()
        for raw in (b"one", b"two", b"one", None):
            conn.execute(
                sa.text(
                    "INSERT INTO deliveries (account_id, user_id, dropbox_kind, rcpt_to,"
                    " mail_from, protocol, peer, raw, size, subject, author, status, reason,"
                    " attempts, next_attempt_at, received_at, sender_auth)"
                    " VALUES (:a, :u, 'note', 'x', 'y', 'smtp', '', :raw, 3, '', '',"
                    " 'queued', '', 0, :now, :now, '')"
                ),
                dict(a=account_id, u=user_id, raw=raw, now=now),
            )
    db.migrate()
    with db.reading() as session:
        assert sorted(session.scalars(sa.select(RawMessage.data))) == [b"one", b"two"]
        raws = [d.raw for d in session.scalars(sa.select(Delivery).order_by(Delivery.id))]
    assert raws == [b"one", b"two", b"one", None]


def test_a_group_commit_is_bounded_by_bytes_as_well_as_by_count() -> None:
    loop = asyncio.new_event_loop()
    try:

        def waiting(size: int) -> tuple[Prepared, asyncio.Future[None]]:
            return Prepared(Spool.of(b"x" * size), [], None, "", "smtp"), loop.create_future()

        pending = [waiting(10) for _ in range(5)]
        batch, rest = take_batch(pending, max_count=3, max_bytes=1000)
        assert (len(batch), len(rest)) == (3, 2)
        pending = [waiting(400) for _ in range(5)]
        batch, rest = take_batch(pending, max_count=64, max_bytes=1000)
        assert (len(batch), len(rest)) == (2, 3)
        batch, rest = take_batch([waiting(5000), waiting(1)], max_count=64, max_bytes=1000)
        assert len(batch) == 1  # a message bigger than the cap still goes, alone
    finally:
        loop.close()


class _BrokenReceiver(Receiver):
    """Our commit, failing as a bug would (a fault injected, the rest is real)."""

    def commit(self, batch: list[Prepared]) -> None:
        raise RuntimeError("a bug in the commit")


def test_a_commit_that_raises_answers_every_waiting_session_with_451(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, domain="dropbox.test")
    db = Database(settings.db_url)
    committer = GroupCommitter(_BrokenReceiver(db, settings))

    async def three_sessions() -> list[Prepared]:
        items = [
            Prepared(Spool.of(b"msg %d" % i), [(None, None)] * 2, None, "", "smtp")  # type: ignore[list-item]
            for i in range(3)
        ]
        return await asyncio.wait_for(
            asyncio.gather(*(committer.store(item) for item in items)), timeout=30
        )

    try:
        # In a thread of its own: a browser test's event loop may run in this one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            done = pool.submit(asyncio.run, three_sessions()).result()
    finally:
        db.dispose()
    assert [item.replies for item in done] == [[TEMPFAIL, TEMPFAIL]] * 3


def test_retention_deletes_the_raw_bytes_of_filed_deliveries_only_and_keeps_the_note(
    store: tuple[Database, Settings], tmp_path: Path
) -> None:
    db, _ = store
    db.migrate()
    settings = load_settings(
        data_dir=tmp_path, domain="dropbox.test", database_url=db.url, raw_retention_days=30
    )
    boxes = _boxes(db, 2)
    receiver = Receiver(db, settings)
    old = make_message(from_="u0@mycorp.example", to=["jane@client.example"]).as_bytes()
    for box in boxes[:1]:
        rcpt = receiver.check_recipient(box)[1]
        assert rcpt is not None
        receiver.accept(
            mail_from="u0@mycorp.example", rcpts=[rcpt], raw=old, protocol="smtp", peer="t"
        )
    while process_one(db, settings):
        pass
    shared = make_message(from_="u0@mycorp.example", to=["bob@client.example"]).as_bytes()
    rcpt = receiver.check_recipient(boxes[0])[1]
    assert rcpt is not None
    receiver.accept(
        mail_from="u0@mycorp.example", rcpts=[rcpt], raw=shared, protocol="smtp", peer="t"
    )
    while process_one(db, settings):
        pass
    # The same bytes once more, still queued: they must survive the purge of the first.
    receiver.accept(
        mail_from="u0@mycorp.example", rcpts=[rcpt], raw=shared, protocol="smtp", peer="t"
    )
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    with db.writing() as session:
        session.execute(
            sa.update(Delivery).where(Delivery.status != "queued").values(finished_at=long_ago)
        )
    assert purge_step(db, settings)
    assert not purge_step(db, settings)
    with db.reading() as session:
        deliveries = session.scalars(sa.select(Delivery).order_by(Delivery.id)).all()
        assert [(d.status, d.raw is None) for d in deliveries] == [
            ("filed", True),
            ("filed", True),
            ("queued", False),
        ]
        assert session.scalars(sa.select(RawMessage.data)).all() == [shared]
        notes = session.scalar(sa.select(sa.func.count()).select_from(Note))
    assert notes == 2
