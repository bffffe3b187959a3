"""`crmdrop serve`: SMTP, LMTP and the web page in this process; the worker and the
reply sender in a child process (`crmdrop worker`), restarted if it dies.

The worker is a process of its own because parsing and filing are CPU work: in
one process they would share the GIL with the SMTP server and slow every accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import uvicorn

from crmdrop.config import Settings, split_hostport
from crmdrop.integrations.postfix import start_policy_server
from crmdrop.outbound.sender import send_one
from crmdrop.outbound.webhooks import send_webhook
from crmdrop.receive.authcheck import configure_resolver
from crmdrop.receive.http import inbound_router
from crmdrop.receive.limits import LIMITS_FILE, SlotCounts
from crmdrop.receive.providers import Provider
from crmdrop.receive.service import Receiver
from crmdrop.receive.smtp import start_servers
from crmdrop.store.db import Database
from crmdrop.store.directory import OwnerCache
from crmdrop.store.inbound import prune_intake_keys, purge_raw
from crmdrop.store.signals import QUEUE, Outbound, PgListener, WakeSocket, wake_path
from crmdrop.store.webhooks import prune_messages
from crmdrop.web.app import create_app
from crmdrop.worker import ParseAhead, PollingThread, Progress, file_next, worker_started

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: `serve` stops everything on SIGTERM itself."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _wake_source(db: Database) -> tuple[threading.Event, Callable[[], None]]:
    """An event set whenever a delivery may have been queued, and how to stop it.

    PostgreSQL: LISTEN (a lost connection sets it too: something may have been
    missed); SQLite: the datagram socket beside the database file.
    """
    wake = threading.Event()
    if not db.is_sqlite:
        listener = PgListener(db.url, {QUEUE: wake.set}, on_lost=wake.set)
        listener.start()
        return wake, listener.stop
    if db.sqlite_file is None:
        return wake, lambda: None
    try:
        sock = WakeSocket(wake_path(db.sqlite_file), wake)
    except OSError as exc:
        log.warning("no wake-up socket (%s): the worker polls", exc)
        return wake, lambda: None
    sock.start()
    return wake, sock.stop


def run_worker(db: Database, settings: Settings, *, parent: int | None = None) -> None:
    """`crmdrop worker`: file deliveries and send replies until SIGTERM (or the parent dies)."""
    worker_started(db)
    wake, stop_wake = _wake_source(db)
    # Replies and webhook messages are queued by a filing: the filing thread wakes the
    # sender of each queue a batch added to, at once (not both after every batch: at low
    # load each wake-up was a transaction of its own that found nothing); the slow poll
    # remains for rows queued by the web app or due later.
    senders = {Outbound.REPLIES: threading.Event(), Outbound.WEBHOOKS: threading.Event()}
    replies, webhooks = senders[Outbound.REPLIES], senders[Outbound.WEBHOOKS]

    # SQLite's one worker parses the next batch in a second process while it files this
    # one; on one core that would only add the pickling.
    spare_core = (os.cpu_count() or 1) > 1
    ahead = ParseAhead() if db.is_sqlite and settings.worker_parse_process and spare_core else None
    if ahead is not None:
        ahead.process.start()

    def file_step() -> bool:
        """True: claim again at once. After a batch that took all that was due, the
        loop waits for the next wake-up instead (one that came meanwhile is still set)."""
        queued: set[Outbound] = set()
        progress = file_next(db, settings, queued, ahead)
        for kind in queued:
            senders[kind].set()
        return progress is Progress.MORE

    poll = settings.worker_poll_seconds
    threads = [
        PollingThread("crmdrop-worker", file_step, poll, wake),
        PollingThread(
            "crmdrop-sender", lambda: send_one(db, settings), poll, replies, gather=SENDER_GATHER
        ),
        PollingThread("crmdrop-retention", lambda: purge_step(db, settings), RETENTION_POLL),
        PollingThread(
            "crmdrop-webhooks",
            lambda: send_webhook(db, settings),
            poll,
            webhooks,
            gather=SENDER_GATHER,
        ),
    ]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for thread in threads:
        thread.start()
    log.info("the worker is up (pid %d)", os.getpid())
    while not stop.wait(0.5):
        if parent is not None and os.getppid() != parent:
            log.warning("serve is gone; the worker stops")
            break
    for thread in threads:
        thread.stop()
    for thread in threads:
        thread.join(timeout=30)
    if ahead is not None and not threads[0].is_alive():
        ahead.close(db)
    stop_wake()


RETENTION_POLL = 600.0  # seconds between looks for rows past their retention
# The reply and webhook senders, woken by every filed batch, look at their queues at most
# this often while filings go on: one transaction for many batches, not one for each,
# and none competing with the next batch's filing.
SENDER_GATHER = 0.05  # seconds


def _purge_raw(db: Database, settings: Settings, now: datetime) -> int:
    if settings.raw_retention_days <= 0:
        return 0
    before = now - timedelta(days=settings.raw_retention_days)
    with db.writing() as session:
        purged = purge_raw(session, before=before)
    if purged:
        log.info("raw bytes of %d filed deliveries deleted (retention)", purged)
    return purged


def _prune_webhooks(db: Database, settings: Settings, now: datetime) -> int:
    if settings.webhook_keep_days <= 0:
        return 0
    with db.writing() as session:
        pruned = prune_messages(session, before=now - timedelta(days=settings.webhook_keep_days))
    if pruned:
        log.info("%d finished webhook messages deleted (retention)", pruned)
    return pruned


def _prune_mailgun_tokens(db: Database, settings: Settings, now: datetime) -> int:
    """A Mailgun request is good while its timestamp is within the window of our clock,
    either side: a token first seen at T can come back until T + 2 windows at most."""
    window = timedelta(seconds=2 * settings.inbound_max_age_seconds + 60)
    with db.writing() as session:
        return prune_intake_keys(session, Provider.MAILGUN.value, before=now - window)


def purge_step(db: Database, settings: Settings) -> bool:
    """One batch of each retention: raw bytes past `raw_retention_days`, finished webhook
    messages past `webhook_keep_days`, Mailgun tokens past their freshness window.
    False when none had anything due."""
    now = datetime.now(UTC)
    done = [
        _purge_raw(db, settings, now),
        _prune_webhooks(db, settings, now),
        _prune_mailgun_tokens(db, settings, now),
    ]
    return any(done)


def child_env(settings: Settings) -> dict[str, str]:
    """The settings in force, as the environment of a child `crmdrop` process."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if name == "data_dir":
            value = settings.data_dir.resolve()
        env[f"CRMDROP_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


async def _supervise(args: list[str], settings: Settings, stop: asyncio.Event) -> None:
    """Keep one `crmdrop ARGS` child running until `stop` (started again if it dies)."""
    env = child_env(settings)
    command = [sys.executable, "-m", "crmdrop", *args, "--parent", str(os.getpid())]
    while not stop.is_set():
        child = subprocess.Popen(command, env=env)
        while child.poll() is None and not stop.is_set():
            await asyncio.sleep(0.2)
        if stop.is_set():
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(child.wait, 30)
            except subprocess.TimeoutExpired:
                child.kill()
            return
        log.error("%s exited with %s; starting it again", args[0], child.returncode)
        await asyncio.sleep(1)


async def _until(stop: asyncio.Event, parent: int | None) -> None:
    """Wait for SIGINT/SIGTERM or, for a child, for its parent to be gone."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while parent is not None and not stop.is_set():
        if os.getppid() != parent:
            log.warning("serve is gone; this acceptor stops")
            stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    await stop.wait()


def _web_server(db: Database, settings: Settings, receiver: Receiver) -> _Server:
    """The pages, the API and the provider webhooks, behind uvicorn."""
    http_host, http_port = split_hostport(settings.http_listen)
    app = create_app(db, settings)
    app.include_router(inbound_router(receiver))
    return _Server(
        uvicorn.Config(
            app,
            host=http_host,
            port=http_port,
            log_level="warning",
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
    )


async def serve(
    db: Database,
    settings: Settings,
    *,
    worker: bool = True,
    acceptors: int = 1,
    acceptor_of: int | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Run everything until SIGINT/SIGTERM (`worker=False`: workers run elsewhere).

    `acceptors` > 1 runs that many SMTP/LMTP processes on the same ports (this one and
    `acceptors - 1` children with `acceptor_of` set: SMTP/LMTP only, no web, no worker).
    """
    if settings.sender_auth == "dns":
        configure_resolver(settings.dns_resolver, settings.dns_timeout)
    cache = OwnerCache(db)
    receiver = Receiver(db, settings, cache)
    several = acceptors > 1 or acceptor_of is not None
    servers = await start_servers(
        receiver,
        settings,
        smtp=split_hostport(settings.smtp_listen),
        lmtp=split_hostport(settings.lmtp_listen),
        reuse_port=several,
        # The acceptors of one host count sessions and token guesses together.
        counts=SlotCounts.shared(settings.data_dir / LIMITS_FILE, fresh=acceptor_of is None)
        if several
        else None,
    )
    if settings.postfix_policy_listen and acceptor_of is None:
        servers.append(
            await start_policy_server(receiver, *split_hostport(settings.postfix_policy_listen))
        )
    stop = asyncio.Event()
    tasks = []
    web = None
    if acceptor_of is None:
        web = _web_server(db, settings, receiver)
        tasks.append(asyncio.create_task(web.serve()))
        if worker:
            tasks.append(asyncio.create_task(_supervise(["worker"], settings, stop)))
        if settings.imap_serve:
            tasks.append(asyncio.create_task(_supervise(["imap"], settings, stop)))
        for _ in range(acceptors - 1):
            extra = ["serve", "--no-demo"]  # with --parent: one more acceptor of this one
            tasks.append(asyncio.create_task(_supervise(extra, settings, stop)))
        print(
            f"crmdrop is up: SMTP {settings.smtp_listen}, LMTP {settings.lmtp_listen}, "
            f"web http://{settings.http_listen}/ ({acceptors} acceptor process(es))\n"
            f"sign in at {settings.web_url}/",
            flush=True,
        )
    if ready is not None:
        ready.set()
    await _until(stop, acceptor_of)
    log.info("stopping")
    if web is not None:
        web.should_exit = True
    for server in servers:
        server.close()
        await server.wait_closed()
    for task in tasks:
        await task
    cache.close()
