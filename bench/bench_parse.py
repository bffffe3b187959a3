"""How fast `parse_message` is: messages per second over the shared corpora, and the
cost of one ordinary 5 KB message and one 100 KB forwarded message.

    .venv/bin/python bench/bench_parse.py [--rounds N]

Results go in the "Parsing" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from corpora_util import corpora_dir, iter_corpus_emails
from crmdrop.mail.headers import read_header_summary
from crmdrop.mail.parse import parse_message

FIVE_KB = (
    "From: Jane Roe <jane@client.example>\nTo: sales@ourco.example\nSubject: Order\n"
    "Date: Tue, 05 Mar 2024 14:30:00 +0100\nMessage-ID: <a1@client.example>\n"
    "Content-Type: text/plain; charset=utf-8\n\n"
    + "Hello, some ordinary words about the order and the delivery date. "
    * 72
).encode()
FORWARD_100KB = (
    "From: Me <me@ourco.example>\nTo: drop@crm.example\nSubject: Fwd: Order\n\n"
    "Please file.\n\n---------- Forwarded message ---------\n"
    "From: Jane Roe <jane@client.example>\nDate: Tue, Mar 5, 2024 at 2:30 PM\n"
    "Subject: Order\nTo: Sales <sales@ourco.example>\n\n"
    + "A long line of ordinary words in the forwarded original, nothing special. "
    * 1400
).encode()


def _per_call_ms(func: object, raw: bytes, n: int, clock: str = "perf_counter") -> float:
    assert callable(func)
    now = getattr(time, clock)
    func(raw)
    start = now()
    for _ in range(n):
        func(raw)
    return float(now() - start) / n * 1000


def _distinct_5kb(n: int) -> list[bytes]:
    """n different 5 KB messages (fresh addresses and words, so no cache helps)."""
    return [
        FIVE_KB.replace(b"jane@client.example", f"user{i}@host{i}.example".encode()).replace(
            b"ordinary", f"ordinary{i}".encode()
        )
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3, help="passes over the corpora (best kept)")
    args = ap.parse_args()
    emails = list(iter_corpus_emails())
    total_bytes = sum(len(raw) for _, raw in emails)
    best = best_cpu = float("inf")
    per_msg: list[float] = []
    for _ in range(args.rounds):
        times = []
        start, start_cpu = time.perf_counter(), time.process_time()
        for _, raw in emails:
            t0 = time.perf_counter()
            parse_message(raw)
            times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
        if elapsed < best:
            best, per_msg = elapsed, times
    per_msg.sort()
    print(f"corpora: {corpora_dir()}")
    print(f"  {len(emails)} email files, {total_bytes / 1e6:.1f} MB")
    print(f"  parse_message: {len(emails) / best:,.0f} messages/s (best of {args.rounds}, wall)")
    # CPU time (user+sys) of this process: what a shared, loaded machine does not inflate
    print(f"  parse_message: {len(emails) / best_cpu:,.0f} messages/s of CPU time (best pass)")
    print(
        f"  per message: median {statistics.median(per_msg) * 1000:.2f} ms, "
        f"p95 {per_msg[int(len(per_msg) * 0.95)] * 1000:.2f} ms, max {per_msg[-1] * 1000:.1f} ms"
    )
    print(
        f"5 KB message, repeated: parse_message {_per_call_ms(parse_message, FIVE_KB, 500):.2f} ms"
        f" (CPU {_per_call_ms(parse_message, FIVE_KB, 500, 'process_time'):.2f} ms)"
    )
    distinct = _distinct_5kb(500)
    start, start_cpu = time.perf_counter(), time.process_time()
    for raw in distinct:
        parse_message(raw)
    cold_ms = (time.perf_counter() - start) / len(distinct) * 1000
    cold_cpu = (time.process_time() - start_cpu) / len(distinct) * 1000
    print(f"5 KB message, 500 distinct: parse_message {cold_ms:.2f} ms (CPU {cold_cpu:.2f} ms)")
    fixtures = sorted(
        (Path(__file__).resolve().parents[1] / "tests/mail/fixtures/clients").glob("*.eml")
    )
    if fixtures:
        raws = [p.read_bytes() for p in fixtures]
        start = time.perf_counter()
        for _ in range(20):
            for raw in raws:
                parse_message(raw)
        fx_ms = (time.perf_counter() - start) / (20 * len(raws)) * 1000
        print(f"client forward fixtures ({len(raws)}, plain/HTML): parse_message {fx_ms:.2f} ms")
    header_ms = _per_call_ms(read_header_summary, FIVE_KB, 2000)
    print(f"5 KB message: read_header_summary {header_ms:.3f} ms")
    fwd_ms = _per_call_ms(parse_message, FORWARD_100KB, 50)
    fwd_cpu = _per_call_ms(parse_message, FORWARD_100KB, 50, "process_time")
    print(f"100 KB forward: parse_message {fwd_ms:.2f} ms (CPU {fwd_cpu:.2f} ms)")


if __name__ == "__main__":
    main()
