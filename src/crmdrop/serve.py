"""`crmdrop serve`: SMTP, LMTP and the web page in this process; the worker and the
reply sender in a child process (`crmdrop worker`), restarted if it dies.

The worker is a process of its own because parsing and filing are CPU work: in
one process they would share the GIL with the SMTP server and slow every accept.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from crmdrop.config import Settings, split_hostport
from crmdrop.integrations.postfix import start_policy_server
from crmdrop.outbound.sender import send_one
from crmdrop.receive.authcheck import configure_resolver
from crmdrop.receive.http import inbound_router
from crmdrop.receive.service import Receiver
from crmdrop.receive.smtp import start_servers
from crmdrop.store.db import Database
from crmdrop.web.app import create_app
from crmdrop.worker import PollingThread, process_one, worker_started

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: `serve` stops everything on SIGTERM itself."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_worker(db: Database, settings: Settings, *, parent: int | None = None) -> None:
    """`crmdrop worker`: file deliveries and send replies until SIGTERM (or the parent dies)."""
    worker_started(db)
    threads = [
        PollingThread(
            "crmdrop-worker", lambda: process_one(db, settings), settings.worker_poll_seconds
        ),
        PollingThread("crmdrop-sender", lambda: send_one(db, settings), 0.5),
    ]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for thread in threads:
        thread.start()
    while not stop.wait(0.5):
        if parent is not None and os.getppid() != parent:
            log.warning("serve is gone; the worker stops")
            break
    for thread in threads:
        thread.stopping.set()
    for thread in threads:
        thread.join(timeout=30)


async def _supervise(settings: Settings, stop: asyncio.Event, command: str = "worker") -> None:
    """Keep one `crmdrop <command>` child (the worker, the IMAP poller) running until `stop`."""
    env = {**os.environ, "CRMDROP_DATA_DIR": str(settings.data_dir.resolve())}
    if settings.database_url:
        env["CRMDROP_DATABASE_URL"] = settings.database_url
    env["CRMDROP_DOMAIN"] = settings.domain
    args = [sys.executable, "-m", "crmdrop", command, "--parent", str(os.getpid())]
    while not stop.is_set():
        child = subprocess.Popen(args, env=env)
        while child.poll() is None and not stop.is_set():
            await asyncio.sleep(0.2)
        if stop.is_set():
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(child.wait, 30)
            except subprocess.TimeoutExpired:
                child.kill()
            return
        log.error("the %s exited with %s; starting it again", command, child.returncode)
        await asyncio.sleep(1)


async def serve(
    db: Database,
    settings: Settings,
    *,
    worker: bool = True,
    ready: threading.Event | None = None,
) -> None:
    """Run everything until SIGINT/SIGTERM (`worker=False`: workers run elsewhere)."""
    if settings.sender_auth == "dns":
        configure_resolver(settings.dns_resolver, settings.dns_timeout)
    receiver = Receiver(db, settings)
    servers = await start_servers(
        receiver,
        settings,
        smtp=split_hostport(settings.smtp_listen),
        lmtp=split_hostport(settings.lmtp_listen),
    )
    if settings.postfix_policy_listen:
        servers.append(
            await start_policy_server(receiver, *split_hostport(settings.postfix_policy_listen))
        )
    http_host, http_port = split_hostport(settings.http_listen)
    app = create_app(db, settings)
    app.include_router(inbound_router(receiver))
    web = _Server(uvicorn.Config(app, host=http_host, port=http_port, log_level="warning"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    web_task = asyncio.create_task(web.serve())
    worker_task = asyncio.create_task(_supervise(settings, stop) if worker else stop.wait())
    imap_task = asyncio.create_task(
        _supervise(settings, stop, "imap") if settings.imap_serve else stop.wait()
    )
    print(
        f"crmdrop is up: SMTP {settings.smtp_listen}, LMTP {settings.lmtp_listen}, "
        f"web http://{settings.http_listen}/",
        flush=True,
    )
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("stopping")
    web.should_exit = True
    for server in servers:
        server.close()
        await server.wait_closed()
    await web_task
    await worker_task
    await imap_task
