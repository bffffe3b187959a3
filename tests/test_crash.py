"""SIGKILL while mail is arriving: after a restart, every message that got a 250 is
filed exactly once (SPEC §6.1, §6.2)."""

from __future__ import annotations

import smtplib
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SERVER_ENV
from tests.support import Cli, ServerProcess, make_message, pg_database, wait_for

SENDERS = 8
KILL_AFTER = 120  # accepted messages before the kill


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "postgresql":
        with pg_database() as url:
            # The killed worker's claimed batch comes back when its lease runs out
            # (5 minutes by default): short here, so the test need not wait that long.
            lease = {"CRMDROP_CLAIM_LEASE_SECONDS": "15"}
            yield {**SERVER_ENV, **lease, "CRMDROP_DATABASE_URL": url}
    else:
        yield dict(SERVER_ENV)


@pytest.mark.slow
def test_every_accepted_message_is_filed_exactly_once_after_a_sigkill(
    env: dict[str, str], tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path, env)
    server.start()
    cli = Cli({**env, "CRMDROP_DATA_DIR": str(tmp_path)})
    owner = cli.add_user("crash@mycorp.example", "crash")
    dropbox = owner["dropbox"]["note"]
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def send_loop(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            msg = make_message(
                from_=owner["email"],
                to=[f"c{worker}-{n}@client.example"],
                subject=f"crash {worker}-{n}",
                body="x" * 2000,
            )
            try:
                with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
                    client.sendmail(owner["email"], [dropbox], msg.as_bytes())
            except (OSError, smtplib.SMTPException):
                return  # the server is gone: this message got no 250
            with lock:
                accepted.append(msg["Message-ID"].strip("<>"))

    threads = [threading.Thread(target=send_loop, args=(i,)) for i in range(SENDERS)]
    for t in threads:
        t.start()
    wait_for(lambda: len(accepted) >= KILL_AFTER, timeout=60, what="messages to be accepted")
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    killed_with = len(accepted)

    server.start()
    try:

        def drained() -> dict | None:
            data = cli.export("crash")
            queued = [d for d in data["deliveries"] if d["status"] == "queued"]
            return None if queued else data

        data = wait_for(drained, timeout=120, what="the queue to drain after the restart")
    finally:
        server.stop()
    notes = Counter(n["message_id"] for n in data["notes"])
    print(
        f"\naccepted {killed_with} messages before SIGKILL; "
        f"{len(data['deliveries'])} deliveries stored, {len(data['notes'])} notes filed"
    )
    assert killed_with >= KILL_AFTER
    missing = [m for m in accepted if notes[m] != 1]
    assert missing == [], f"{len(missing)} accepted messages not filed exactly once"
    assert all(count == 1 for count in notes.values())
    assert {d["status"] for d in data["deliveries"]} == {"filed"}
