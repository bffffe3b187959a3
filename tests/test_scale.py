"""Scaling behaviour (issue #12), on real servers and databases, never timed:
several acceptor processes see a regenerated token at once; DATA read into one buffer
keeps every byte; several workers file a burst exactly once; a killed worker loses
nothing; a worker that misses its wake-up still files (the safety poll)."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from crmdrop.config import Settings, load_settings
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.inbound import NewDelivery, add_delivery
from tests.conftest import SERVER_ENV, OwnServer, own_server
from tests.support import DOMAIN, children_running, make_message, pg_database, smtp_send, wait_for


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _sockets_on(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets on local `port` in `state` (01 established, 0A listen)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state:
                found.add(fields[9])
    return found


def _acceptors(serve_pid: int) -> list[int]:
    """The serve process and its extra acceptor children (not the worker)."""
    return [serve_pid, *children_running(serve_pid, "serve")]


@pytest.fixture(params=["sqlite", "postgresql"])
def two_acceptors(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OwnServer]:
    # 16 sessions from 127.0.0.1 below: more than the per-IP session limit of one process
    # (tested on its own in tests/test_port_limits.py) when the kernel gives one most.
    env = {
        **SERVER_ENV,
        "CRMDROP_DATA_DIR": str(tmp_path),
        "CRMDROP_SMTP_MAX_SESSIONS_PER_IP": "100",
    }
    yield from own_server(request.param, tmp_path, env, "--acceptors", "2", worker=False)


def test_a_regenerated_token_is_refused_at_once_by_every_acceptor(
    two_acceptors: OwnServer,
) -> None:
    own = two_acceptors
    user = own.cli.add_user(f"owner-{uuid.uuid4().hex[:8]}@mycorp.example", "acme")
    old = user["dropbox"]["note"]
    port = own.server.smtp_port
    assert own.server.proc is not None
    serve_pid = own.server.proc.pid

    def listening() -> list[int] | None:
        pids = _acceptors(serve_pid)
        listen = _sockets_on(port, "0A")
        return pids if len(pids) == 2 and all(_socket_inodes(p) & listen for p in pids) else None

    pids: list[int] = wait_for(listening, timeout=60, what="both acceptors to listen")
    clients: list[smtplib.SMTP] = []
    try:
        # Many connections: the kernel spreads them over both processes; each one
        # learns the old token (and remembers it).
        for _ in range(16):
            client = smtplib.SMTP("127.0.0.1", port, timeout=30)
            client.ehlo("tests.example")
            client.mail(user["email"])
            assert client.rcpt(old)[0] == 250
            clients.append(client)
        established = _sockets_on(port, "01")
        held = {pid: len(_socket_inodes(pid) & established) for pid in pids}
        assert all(count > 0 for count in held.values()), held  # both took connections

        new = own.cli.json("dropbox", "regenerate", user["email"], "--json")["dropbox"]["note"]
        # At once, on every connection, in both processes. On PostgreSQL the acceptors
        # hear of the change by NOTIFY, which arrives a few milliseconds after the
        # commit (later on a starved host): allow it seconds — without it nothing would ever
        # make an acceptor forget a remembered token (no TTL).
        for client in clients:
            wait_for(lambda c=client: _refused(c, user["email"], old), timeout=5, what="550")
            assert client.rcpt(new)[0] == 250
    finally:
        for client in clients:
            client.close()


def _refused(client: smtplib.SMTP, sender: str, rcpt: str) -> bool:
    client.rset()
    client.mail(sender)
    return client.rcpt(rcpt)[0] == 550


def test_data_keeps_every_byte_of_a_large_dot_stuffed_message(tmp_path: Path) -> None:
    env = {**SERVER_ENV, "CRMDROP_DATA_DIR": str(tmp_path)}
    for own in own_server("sqlite", tmp_path, env, worker=False):  # what DATA stored
        user = own.cli.add_user("owner@mycorp.example", "acme")
        body = ".leading dot\n..two dots\n.\nend\n" * 50
        msg = make_message(
            from_=user["email"],
            to=["client@customer.example"],
            body=body,
            attachments=[("a.bin", bytes(range(256)) * 2000)],  # 512 KB
        )
        raw = msg.as_bytes()
        assert smtp_send(own.server.smtp_port, user["email"], [user["dropbox"]["note"]], raw) == {}
        engine = create_engine(own.url)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT data FROM raw_messages")).scalar_one()
        engine.dispose()
        assert stored == raw
        assert DOMAIN in user["dropbox"]["note"]


# --- workers -------------------------------------------------------------------------


class Workers:
    """`crmdrop worker` processes over one database, and what they filed."""

    def __init__(self, url: str, data_dir: Path, **settings: str) -> None:
        self.url = url
        self.env = {
            **os.environ,
            **SERVER_ENV,
            "CRMDROP_DATA_DIR": str(data_dir),
            "CRMDROP_DATABASE_URL": url,
            "CRMDROP_LOG_LEVEL": "WARNING",
            **settings,
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            self.procs.append(
                subprocess.Popen([sys.executable, "-m", "crmdrop", "worker"], env=self.env)
            )

    def scalar(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        self.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, Settings]]:
    def open_db(url: str | None) -> tuple[Database, Settings]:
        settings = load_settings(data_dir=tmp_path, domain=DOMAIN, database_url=url)
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


@pytest.fixture
def pg_store(tmp_path: Path) -> Iterator[tuple[Database, Settings]]:
    with pg_database() as url:
        settings = load_settings(data_dir=tmp_path, domain=DOMAIN, database_url=url)
        db = Database(settings.db_url)
        db.migrate()
        yield db, settings
        db.dispose()


def _burst(db: Database, messages: int, *, colleagues: int = 1, twice: bool = False) -> int:
    """Queue `messages` messages from each of `colleagues` users of one account to their
    own note dropbox, straight into the queue (no wake-up signal); message n names
    clients n and n + 1, so neighbours race to create the same contact. `twice`: each
    is queued a second time (as a retrying MTA would). The number of deliveries."""
    with db.writing() as session:
        users = [
            accounts.add_user(session, f"u{i}@mycorp.example", name=f"U{i}", account="acme")
            for i in range(colleagues)
        ]
        owners = [(u.account_id, u.id, u.email) for u in users]
    now = datetime.now(UTC)
    count = 0
    with db.write_connection() as conn:
        for n in range(messages):
            to = [f"client{n}@customer.example", f"client{n + 1}@customer.example"]
            for account_id, user_id, email in owners:
                raw = make_message(from_=email, to=to, subject=f"burst {n}").as_bytes()
                new = NewDelivery(
                    account_id, user_id, "note", "dropbox@test", email, "smtp", "", None, "", email
                )
                for _ in range(2 if twice else 1):
                    add_delivery(conn, new, raw, now=now)
                    count += 1
    return count


def test_several_workers_on_postgresql_file_a_burst_exactly_once(
    pg_store: tuple[Database, Settings], tmp_path: Path
) -> None:
    db, _ = pg_store
    deliveries = _burst(db, 30, colleagues=2, twice=True)
    workers = Workers(db.url, tmp_path)
    workers.start(3)
    try:
        wait_for(
            lambda: workers.scalar("SELECT count(*) FROM deliveries WHERE status = 'queued'") == 0,
            timeout=240,
            what="the burst to be filed",
        )
        count = "SELECT count(*) FROM deliveries WHERE status = '{}'"
        assert workers.scalar(count.format("filed")) == deliveries // 2  # once each...
        assert workers.scalar(count.format("duplicate")) == deliveries // 2  # ...never twice
        assert workers.scalar("SELECT count(*) FROM notes") == 60  # 30 from each colleague
        # The clients the messages share were created once each, though workers raced.
        assert workers.scalar("SELECT count(*) FROM contact_emails") == 31
    finally:
        workers.stop()


def test_a_worker_killed_mid_batch_loses_nothing(
    pg_store: tuple[Database, Settings], tmp_path: Path
) -> None:
    db, _ = pg_store
    # Enough batches (≈ 10) for the poll below to catch one in the middle: with 100
    # (4 batches, the first without a note yet) a fast worker could drain them between
    # two polls, and the test waited 120 s for a moment that had passed.
    deliveries = _burst(db, 300)
    workers = Workers(db.url, tmp_path, CRMDROP_CLAIM_LEASE_SECONDS="3")
    workers.start(1)
    try:
        held = "SELECT count(*) FROM deliveries WHERE status = 'queued' AND claimed_at IS NOT NULL"
        wait_for(
            lambda: _stopped_mid_batch(workers, held),
            timeout=120,
            what="the worker to be in the middle of a batch",
        )
        workers.procs[0].kill()
        workers.procs[0].wait()
        assert workers.scalar(held) > 0  # it died holding claims
        workers.start(1)  # another takes over once the lease has run out
        wait_for(
            lambda: workers.scalar("SELECT count(*) FROM deliveries WHERE status = 'queued'") == 0,
            timeout=240,
            what="the rest to be filed",
        )
        assert workers.scalar("SELECT count(*) FROM deliveries WHERE status = 'filed'") == (
            deliveries
        )
        assert workers.scalar("SELECT count(*) FROM notes") == deliveries
    finally:
        workers.stop()


def _all_stopped(pid: int) -> bool:
    """Every thread of `pid` is stopped (state T in /proc)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return all(Path(t, "stat").read_text().rsplit(")", 1)[1].split()[0] == "T" for t in tasks)


def _stopped_mid_batch(workers: Workers, held: str) -> bool:
    """Freeze the first worker (SIGSTOP) and keep it frozen if it holds claims after filing
    a note; else let it go on. A poll alone raced: the worker could finish its batch
    between the poll that saw claims and the kill (CI, session 9: 0 claims at the kill)."""
    proc = workers.procs[0]
    proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: _all_stopped(proc.pid), timeout=10, what="the worker to stop")
    time.sleep(0.2)  # a COMMIT it sent just before may still be landing
    if workers.scalar("SELECT count(*) FROM notes") > 0 and workers.scalar(held) > 0:
        return True
    proc.send_signal(signal.SIGCONT)
    return False


def test_a_missed_wake_up_is_caught_by_the_safety_poll(
    store: tuple[Database, Settings], tmp_path: Path
) -> None:
    db, settings = store
    workers = Workers(db.url, tmp_path, CRMDROP_WORKER_POLL_SECONDS="1")
    workers.start(1)
    try:
        # Queued through the receiver: a wake-up is sent (NOTIFY, or the socket).
        with db.writing() as session:
            user = accounts.add_user(session, "o@mycorp.example", name="O", account="acme")
            box = f"dropbox-{user.token}@{DOMAIN}"  # the note dropbox
        receiver = Receiver(db, settings)
        reply, rcpt = receiver.check_recipient(box)
        assert rcpt is not None, reply
        raw = make_message(from_="o@mycorp.example", to=["a@customer.example"]).as_bytes()
        verdict = receiver.accept(
            mail_from="o@mycorp.example", rcpts=[rcpt], raw=raw, protocol="smtp", peer="t"
        )
        assert verdict.replies[0].startswith("250")
        filed = "SELECT count(*) FROM deliveries WHERE status = 'filed'"
        wait_for(lambda: workers.scalar(filed) == 1, timeout=60, what="the woken worker")
        # Queued behind the signals' back: no NOTIFY, no datagram. Filed all the same.
        _burst(db, 1)
        wait_for(lambda: workers.scalar(filed) == 2, timeout=60, what="the safety poll")
    finally:
        workers.stop()
