"""Accept → filed latency at a steady load below capacity (p50 / p99).

Runs `crmdrop serve` (SMTP + its worker) on a fresh SQLite or PostgreSQL database and
sends 5 KB messages at a fixed rate (open loop: a message is due every 1/rate s,
whatever the replies do) over a few SMTP sessions. Each `250 ... queued as N` is timed
by the client; a watcher in this process reads which deliveries are finished every
2 ms. Latency is the time from the 250 to the first read that shows the delivery filed.

    .venv/bin/python bench/bench_latency.py [--db sqlite] [--rate 150] [--messages 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiosmtplib
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_user,
    bench_database,
    crmdrop_env,
    machine_load,
    message,
    start_serve,
    stop,
    wait_port,
)


class Watcher(threading.Thread):
    """Notes when each delivery is first seen finished."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        self.seen: dict[int, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        low = 0
        query = text("SELECT id FROM deliveries WHERE status != 'queued' AND id > :low")
        with self.engine.connect() as conn:
            while not self.stopping.is_set():
                rows = conn.execute(query, {"low": low}).scalars().all()
                conn.rollback()
                now = time.perf_counter()
                for delivery_id in rows:
                    self.seen.setdefault(delivery_id, now)
                while low + 1 in self.seen:
                    low += 1
                time.sleep(0.002)


async def send(port: int, sender: str, rcpt: str, args: argparse.Namespace) -> dict[int, float]:
    accepted: dict[int, float] = {}
    payloads = [message(sender, f"c{i}@client.example", n=i) for i in range(200)]
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port) for _ in range(args.sessions)]
    for client in clients:
        await client.connect()
    free: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for client in clients:
        free.put_nowait(client)

    async def one(n: int) -> None:
        client = await free.get()
        try:
            _, reply = await client.sendmail(sender, [rcpt], payloads[n % len(payloads)])
        finally:
            free.put_nowait(client)
        found = re.search(r"queued as (\d+)", reply)
        assert found, reply
        accepted[int(found.group(1))] = time.perf_counter()

    start = time.perf_counter()
    tasks = []
    for n in range(args.messages):
        delay = start + n / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    for client in clients:
        await client.quit()
    return accepted


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rate", type=float, default=150, help="messages per second")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=8)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="crmdrop-latency-"))
    print(machine_load())
    with bench_database(args.db, data) as url:
        env = crmdrop_env(data, url)
        user = add_user(env)
        rcpt = user["dropbox"]["note"]
        served, smtp, _ = start_serve(env)
        watcher = Watcher(url)
        try:
            wait_port(smtp)
            watcher.start()
            warm = argparse.Namespace(**{**vars(args), "messages": 5, "rate": 5.0})
            for delivery_id in asyncio.run(send(smtp, user["email"], rcpt, warm)):
                while delivery_id not in watcher.seen:  # the worker child is up
                    time.sleep(0.05)
            accepted = asyncio.run(send(smtp, user["email"], rcpt, args))
            deadline = time.monotonic() + 60
            while set(accepted) - set(watcher.seen) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            watcher.stopping.set()
            stop(served)
            watcher.join()
            watcher.engine.dispose()
    ms = [(watcher.seen[i] - t) * 1000 for i, t in accepted.items() if i in watcher.seen]
    print(
        f"{args.db}, {args.rate:g} msg/s offered, {len(accepted)} accepted, {len(ms)} filed: "
        f"accept -> filed p50 {percentile(ms, 50):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
        f"max {max(ms):.0f} ms; {machine_load()}"
    )


if __name__ == "__main__":
    main()
