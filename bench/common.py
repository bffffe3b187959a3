"""Shared bits of the benchmarks: a 5 KB message and a concurrent SMTP load."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def message(sender: str, to: str, size: int = 5000, n: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"bench {n}"
    msg["Message-ID"] = make_msgid(domain="bench.example")
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n"
    msg.set_content(line * max(1, size // len(line)))
    return msg.as_bytes()


async def _session(port: int, sender: str, rcpt: str, count: int, payloads: list[bytes]) -> int:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
    await client.connect()
    ok = 0
    for i in range(count):
        errors, _ = await client.sendmail(sender, [rcpt], payloads[i % len(payloads)])
        ok += not errors
    await client.quit()
    return ok


def smtp_load(port: int, sender: str, rcpt: str, *, total: int, sessions: int) -> float:
    """Messages accepted per second by `sessions` concurrent connections sending `total`."""
    payloads = [message(sender, f"c{i}@client.example", n=i) for i in range(200)]

    async def run() -> int:
        per = total // sessions
        results = await asyncio.gather(
            *(_session(port, sender, rcpt, per, payloads) for _ in range(sessions))
        )
        return sum(results)

    start = time.perf_counter()
    accepted = asyncio.run(run())
    elapsed = time.perf_counter() - start
    assert accepted == (total // sessions) * sessions, accepted
    return accepted / elapsed


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def median(values: list[float]) -> float:
    return statistics.median(values)
