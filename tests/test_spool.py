"""Large messages in bounded memory (issue #12), on real servers and databases, never
timed: DATA past the spool threshold waits in a temporary file, is stored byte for byte
(SQLite and PostgreSQL), and is filed with its attachment byte for byte (stored in
chunks on both: blob I/O, binary COPY) and downloaded so; a group commit
that fails still stores the spooled message when it is committed alone."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from crmdrop.config import Settings, load_settings
from crmdrop.receive.service import TEMPFAIL
from crmdrop.spool import Spool
from crmdrop.store.blobs import insert_streamed_postgresql
from crmdrop.store.db import Database
from crmdrop.store.models import Attachment, Delivery, RawMessage
from crmdrop.worker import process_one
from tests.conftest import SERVER_ENV, own_server
from tests.support import make_message, open_files_in, pg_database, receiver_with_owner, wait_for

THRESHOLD = 64 * 1024


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_spool_rolls_over_to_a_file_and_reads_back_every_byte() -> None:
    raw = b"From: a@b.example\r\nSubject: x\r\n\r\n" + os.urandom(300_000)
    spool = Spool(THRESHOLD)
    for start in range(0, len(raw), 1000):
        spool.write(raw[start : start + 1000])
    assert spool.on_disk
    assert (len(spool), spool.digest) == (len(raw), _sha(raw))
    assert b"".join(spool.chunks(4096)) == raw
    assert b"".join(spool.chunks()) == raw  # read again from the start (a retried commit)
    assert spool.head() == b"From: a@b.example\r\nSubject: x\r\n\r\n"
    assert spool.getvalue() == raw
    spool.close()
    small = Spool.of(b"Subject: y\n\nbody")
    assert (small.on_disk, small.head(), small.getvalue()) == (
        False,
        b"Subject: y\n\n",
        small.getvalue(),
    )


def test_a_message_past_the_spool_threshold_is_stored_and_filed_byte_for_byte(
    tmp_path: Path, backend: str
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    env = {
        **SERVER_ENV,
        "CRMDROP_DATA_DIR": str(tmp_path),
        "CRMDROP_SMTP_SPOOL_BYTES": str(THRESHOLD),
        "CRMDROP_MAX_MESSAGE_SIZE": str(8 * 1024 * 1024),
        "TMPDIR": str(spool_dir),
    }
    for own in own_server(backend, tmp_path, env):
        user = own.cli.add_user("owner@mycorp.example", "acme")
        payload = os.urandom(1_500_000)  # base64: ≈ 2 MB, past the parser's cut too
        msg = make_message(
            from_=user["email"],
            to=["client@customer.example"],
            body=".a line with a leading dot\nThe contract is attached.\n",
            attachments=[("contract.pdf", payload)],
        )
        raw = msg.as_bytes()
        assert raw.endswith(b"\r\n")  # else the client would add the line end
        assert own.server.proc is not None
        with smtplib.SMTP("127.0.0.1", own.server.smtp_port, timeout=60) as client:
            client.ehlo("tests.example")
            client.mail(user["email"])
            assert client.rcpt(user["dropbox"]["note"])[0] == 250
            assert client.docmd("DATA")[0] == 354
            stuffed = raw.replace(b"\r\n.", b"\r\n..")
            half = len(stuffed) // 2
            client.send(stuffed[:half])
            # Past the threshold the message waits in a temporary file, not in memory.
            pid = own.server.proc.pid
            wait_for(
                lambda: open_files_in(pid, spool_dir),  # noqa: B023 - used at once
                timeout=30,
                what="DATA spooled to a file",
            )
            client.send(stuffed[half:] + b".\r\n")
            code, reply = client.getreply()
            assert code == 250, reply
        assert open_files_in(own.server.proc.pid, spool_dir) == []  # closed, so deleted
        engine = sa.create_engine(own.url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                stored = conn.execute(sa.text("SELECT data, size FROM raw_messages")).one()
            assert (_sha(bytes(stored.data)), stored.size) == (_sha(raw), len(raw))

            def attachment() -> tuple[int, str, str, int] | None:
                with engine.connect() as conn:  # noqa: B023 - used at once
                    row = conn.execute(
                        sa.text("SELECT id, filename, data, size FROM attachments")
                    ).first()
                if row is None:
                    return None
                return row.id, row.filename, _sha(bytes(row.data)), row.size

            attachment_id, *filed = wait_for(attachment, timeout=60, what="the note's attachment")
            assert filed == ["contract.pdf", _sha(payload), len(payload)]
        finally:
            engine.dispose()
        # ... and downloaded byte for byte (streamed into its row on both backends).
        made = own.cli.json("tokens", "create", user["email"], "--name", "t", "--json")
        download = httpx.get(
            f"http://127.0.0.1:{own.server.http_port}/api/v1/attachments/{attachment_id}",
            headers={"Authorization": f"Bearer {made['token']}"},
            timeout=60,
        )
        assert download.status_code == 200
        assert _sha(download.content) == _sha(payload)


def test_a_failed_group_commit_still_stores_a_spooled_message_committed_alone(
    store: tuple[Database, Settings],
) -> None:
    """The shared transaction fails (a message for an account deleted since RCPT: a
    foreign key); each is then committed on its own, reading its spool again."""
    db, settings = store
    receiver, rcpt = receiver_with_owner(db, settings)
    payload = os.urandom(900_000)  # past the parser's cut: filed in chunks too
    raw = make_message(
        from_="u@mycorp.example", to=["jane@client.example"], attachments=[("a.bin", payload)]
    ).as_bytes()
    good = Spool(THRESHOLD)
    good.write(raw)
    assert good.on_disk
    items = [
        receiver.prepare(
            mail_from="u@mycorp.example", rcpts=[rcpt], raw=good, protocol="smtp", peer="t"
        ),
        receiver.prepare(
            mail_from="u@mycorp.example",
            rcpts=[rcpt],
            raw=Spool.of(raw.replace(b"jane@", b"john@")),
            protocol="smtp",
            peer="t",
        ),
    ]
    items[1].rows = [(dataclasses.replace(items[1].rows[0][0], account_id=999_999), None)]
    receiver.commit(items)
    assert items[0].replies[0].startswith("250 2.0.0 OK: queued as"), items[0].replies
    assert items[1].replies == [TEMPFAIL]
    with db.reading() as session:
        stored = session.scalars(sa.select(RawMessage)).all()
        assert [(r.digest, r.size) for r in stored] == [(_sha(raw), len(raw))]
        assert stored[0].data == raw
        assert session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 1
    assert process_one(db, settings)
    with db.reading() as session:
        files = session.scalars(sa.select(Attachment)).all()
        assert [(f.filename, f.size, _sha(f.data)) for f in files] == [
            ("a.bin", len(payload), _sha(payload))
        ]
    good.close()


def test_values_streamed_into_postgresql_rows_are_their_own_and_never_cut(
    tmp_path: Path,
) -> None:
    """Binary COPY into a staging table, then INSERT ... SELECT: two values in one
    transaction do not mix, and a stream that is not the announced size fails the
    transaction (nothing of it stays)."""
    table = RawMessage.__table__
    assert isinstance(table, sa.Table)
    now = datetime.now(UTC)
    first, second = os.urandom(2_500_000), os.urandom(1_200_001)

    def chunks(data: bytes) -> Iterator[bytes]:
        return (data[i : i + 1_048_576] for i in range(0, len(data), 1_048_576))

    with pg_database() as url:
        settings = load_settings(data_dir=tmp_path, domain="dropbox.test", database_url=url)
        db = Database(settings.db_url)
        db.migrate()
        with db.writing() as session:
            for data in (first, second):
                values = {"digest": _sha(data), "size": len(data), "received_at": now}
                insert_streamed_postgresql(session, table, values, "data", len(data), chunks(data))
        for wrong in (first[:-1], first + b"x"):
            with pytest.raises(RuntimeError, match="streamed"), db.writing() as session:
                values = {"digest": "rolled back", "size": len(second), "received_at": now}
                insert_streamed_postgresql(session, table, values, "data", len(second), [second])
                values = {"digest": "cut", "size": len(first), "received_at": now}
                insert_streamed_postgresql(session, table, values, "data", len(first), [wrong])
        with db.reading() as session:
            stored = session.execute(sa.select(RawMessage.digest, RawMessage.data)).all()
        assert sorted((d, _sha(bytes(v))) for d, v in stored) == sorted(
            (_sha(v), _sha(v)) for v in (first, second)
        )
        db.dispose()
