"""`crmdrop serve`: SMTP, LMTP, the web page, the worker and the reply sender in one process."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import uvicorn

from crmdrop.config import Settings, split_hostport
from crmdrop.outbound.sender import send_one
from crmdrop.receive.service import Receiver
from crmdrop.receive.smtp import start_servers
from crmdrop.store.db import Database
from crmdrop.web.app import create_app
from crmdrop.worker import WorkerThread

log = logging.getLogger(__name__)


class SenderThread(threading.Thread):
    """Sends queued replies through the relay; sleeps when there are none."""

    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(name="crmdrop-sender", daemon=True)
        self.db = db
        self.settings = settings
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = send_one(self.db, self.settings)
            except Exception:
                log.exception("reply sender error; pausing")
                busy = False
            if not busy:
                self.stopping.wait(0.5)


async def serve(db: Database, settings: Settings, *, ready: threading.Event | None = None) -> None:
    """Run everything until SIGINT/SIGTERM."""
    receiver = Receiver(db, settings)
    servers = await start_servers(
        receiver,
        settings,
        smtp=split_hostport(settings.smtp_listen),
        lmtp=split_hostport(settings.lmtp_listen),
    )
    http_host, http_port = split_hostport(settings.http_listen)
    web = uvicorn.Server(
        uvicorn.Config(
            create_app(db, settings), host=http_host, port=http_port, log_level="warning"
        )
    )
    web.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    workers: list[WorkerThread | SenderThread] = [
        WorkerThread(db, settings),
        SenderThread(db, settings),
    ]
    for thread in workers:
        thread.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    web_task = asyncio.create_task(web.serve())
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
    for thread in workers:
        thread.stopping.set()
    for thread in workers:
        thread.join(timeout=10)
