"""Accept → filed latency at a steady load below capacity (p50 / p99).

Runs `crmdrop serve` (SMTP + its worker) on a fresh SQLite or PostgreSQL database and
sends 5 KB messages at a fixed rate (open loop: a message is due every 1/rate s,
whatever the replies do) over a few SMTP sessions. Each `250 ... queued as N` is timed
by the client; a watcher in this process reads which deliveries are finished every
2 ms. Latency is the time from the 250 to the first read that shows the delivery filed.

    .venv/bin/python bench/bench_latency.py [--db sqlite] [--rate 150] [--messages 3000] [--trace]

`--trace` also stamps the served processes (`bench/latency_trace/sitecustomize.py`: the
accept commits, the worker's wake-ups and each batch's claim (with its messages), parse,
decide and apply) and prints where the time went, phase by phase. Every stamp is `time.time()`,
one clock for all the processes of this host.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import aiosmtplib
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_user,
    bench_database,
    children,
    cpu_seconds,
    crmdrop_env,
    machine_load,
    message,
    scratch_dir,
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
                now = time.time()
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
        accepted[int(found.group(1))] = time.time()

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


def worker_pid(serve_pid: int) -> int:
    for pid in children(serve_pid):
        if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise LookupError("no worker child")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _phases(trace: Path, accepted: dict[int, float], seen: dict[int, float]) -> None:
    """Where each delivery's time went, from its accept commit to the watcher's read."""
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    committed = {i: r["t1"] for r in records if r["k"] == "accept" for i in r["ids"]}
    batches = sorted((r for r in records if r["k"] == "batch"), key=lambda r: r["t0"])
    batch_of = {i: b for b in batches for i in b["ids"]}
    names = [
        "commit->250",
        "250->seen",
        "wait",
        "claim",
        "parse",
        "decide",
        "apply",
        "filed->seen",
        "commit->filed",
    ]
    rows: list[tuple[float, list[float], bool]] = []
    for i, ok in accepted.items():
        b = batch_of.get(i)
        if b is None or i not in seen or i not in committed:
            continue
        c = committed[i]
        busy = any(o["t0"] < c < o["t1"] for o in batches if o is not b and o["t0"] < b["t0"])
        start = max(c, b["t0"])
        rows.append(
            (
                seen[i] - ok,
                [
                    ok - c,
                    seen[i] - ok,
                    start - c,
                    b["claim"] - start,
                    b["parse"] - b["claim"],
                    b["decide"] - b["parse"],
                    b["t1"] - b["decide"],
                    seen[i] - b["t1"],
                    b["t1"] - c,
                ],
                busy,
            )
        )
    rows.sort(key=lambda r: r[0])
    tail = rows[int(len(rows) * 0.9) :]
    sizes = sorted(len(b["ids"]) for b in batches)
    empty = sum(r["k"] == "empty" for r in records)
    print(
        f"{len(batches)} batches (and {empty} empty claims), "
        f"size median {sizes[len(sizes) // 2]}, max {sizes[-1]}; "
        f"worker busy at the commit for {sum(r[2] for r in rows) / len(rows):.0%} "
        f"(slowest tenth: {sum(r[2] for r in tail) / len(tail):.0%})"
    )
    print(f"{'ms':>14} {'median':>7} {'p99':>7} {'mean':>7} {'mean, slowest tenth':>20}")
    steps = ["t0", "claim", "parse", "decide", "t1"]
    cpu = [
        sorted((b[f"{after}_cpu"] - b[f"{before}_cpu"]) * 1000 for b in batches)
        for before, after in itertools.pairwise(steps)
    ]
    waits = sorted(b.get("lock", 0.0) * 1000 for b in batches)
    others = [r["wait"] * 1000 for r in records if r["k"] == "lock"]
    print(
        f"SQLite write lock: the worker's batches waited median {percentile(waits, 50):.1f}, "
        f"p99 {percentile(waits, 99):.1f} ms in all; other BEGINs waiting > 0.5 ms: "
        f"{len(others)}, {sum(others):.0f} ms in all"
    )
    print(
        "worker thread CPU per batch, median ms: claim {:.1f}, parse {:.1f}, "
        "decide {:.1f}, apply {:.1f}".format(*(percentile(c, 50) for c in cpu))
    )
    for n, name in enumerate(names):
        values = sorted(r[1][n] * 1000 for r in rows)
        mean_tail = sum(r[1][n] for r in tail) / len(tail) * 1000
        print(
            f"{name:>14} {percentile(values, 50):7.1f} {percentile(values, 99):7.1f} "
            f"{sum(values) / len(values):7.1f} {mean_tail:20.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rate", type=float, default=150, help="messages per second")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--trace", action="store_true", help="print the time of each phase")
    args = parser.parse_args()
    data = scratch_dir("crmdrop-latency-")
    trace = data / "trace.jsonl"
    print(machine_load())
    with bench_database(args.db, data) as url:
        env = crmdrop_env(data, url)
        if args.trace:
            hook = str(Path(__file__).resolve().parent / "latency_trace")
            path = os.pathsep.join(p for p in [hook, env.get("PYTHONPATH", "")] if p)
            env.update(PYTHONPATH=path, CRMDROP_LATENCY_TRACE=str(trace))
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
            worker = worker_pid(served.pid)
            cpu = cpu_seconds(served.pid), cpu_seconds(worker)
            accepted = asyncio.run(send(smtp, user["email"], rcpt, args))
            deadline = time.monotonic() + 60
            while set(accepted) - set(watcher.seen) and time.monotonic() < deadline:
                time.sleep(0.05)
            cpu = cpu_seconds(served.pid) - cpu[0], cpu_seconds(worker) - cpu[1]
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
    print(
        f"CPU per message: SMTP process {cpu[0] / len(accepted) * 1000:.2f} ms, "
        f"worker {cpu[1] / len(accepted) * 1000:.2f} ms"
    )
    if args.trace:
        _phases(trace, accepted, watcher.seen)


if __name__ == "__main__":
    main()
