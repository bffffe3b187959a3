"""Peak resident memory for 25 MB messages: the SMTP process and the worker.

For each scenario a fresh `crmdrop serve` (SQLite, or a new PostgreSQL database with
`--db postgresql`) is started and warmed up with one
small message (filed), so that start-up work (the worker builds its date tables, the
first message imports the parsing modules) is not counted; once both processes are idle
(their CPU time stands still) their RSS is read as "idle" and their peak is reset
(`/proc/<pid>/clear_refs`, 5). Then one 25 MB message (a PDF-like attachment, base64)
is sent — or ten at once over ten sessions — and, once every delivery is filed, the
peak RSS (VmHWM, which the kernel keeps per process) of the SMTP process and of its
worker child is read.

With `--lmtp` the warm-up and the messages go to the serve process's LMTP port instead
(its own `asyncio.Protocol` reader, `receive/lmtp.py`): the standard library's
`smtplib.LMTP` (LHLO), one session per message, each in its own thread so that the ten
are sent at once. The figures are then the LMTP reader's; without it, the SMTP port's.

    .venv/bin/python bench/bench_memory.py [--db sqlite] [--size-mb 25] [--many 10] [--lmtp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import smtplib
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
from sqlalchemy import Engine, create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_user,
    bench_database,
    children,
    crmdrop_env,
    machine_load,
    peak_rss_mb,
    rss_mb,
    start_serve,
    stop,
    wait_port,
)


def big_message(sender: str, size: int, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"client{n}@client.example"
    msg["Subject"] = f"big {n}"
    msg["Message-ID"] = make_msgid(domain="bench.example")
    msg.set_content("The contract is attached.\n")
    payload = os.urandom(size * 3 // 4 - 4096)  # base64 makes it 4/3 bigger
    msg.add_attachment(payload, maintype="application", subtype="pdf", filename="c.pdf")
    return msg.as_bytes()


async def send_all(port: int, sender: str, rcpt: str, messages: list[bytes]) -> None:
    async def one(raw: bytes) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=300)
        await client.connect()
        errors, reply = await client.sendmail(sender, [rcpt], raw)
        assert not errors and "queued" in reply, reply
        await client.quit()

    await asyncio.gather(*(one(raw) for raw in messages))


def lmtp_one(port: int, sender: str, rcpt: str, raw: bytes) -> None:
    with smtplib.LMTP("127.0.0.1", port, timeout=300) as client:
        client.ehlo_or_helo_if_needed()  # LHLO
        crlf = raw.replace(b"\n", b"\r\n")  # smtplib sends bytes as given, aiosmtplib not
        replies = [client.mail(sender), client.rcpt(rcpt), client.data(crlf)]
    # one recipient: one reply to DATA
    assert all(code == 250 for code, _ in replies) and b"queued" in replies[-1][1], replies


def send_lmtp(port: int, sender: str, rcpt: str, messages: list[bytes]) -> None:
    """Every message in its own LMTP session, all at once (a thread each)."""
    with ThreadPoolExecutor(len(messages)) as pool:
        futures = [pool.submit(lmtp_one, port, sender, rcpt, raw) for raw in messages]
    for future in futures:
        future.result()  # an assertion failed in a thread: raised here


def send(port: int, sender: str, rcpt: str, messages: list[bytes], lmtp: bool) -> None:
    if lmtp:
        send_lmtp(port, sender, rcpt, messages)
    else:
        asyncio.run(send_all(port, sender, rcpt, messages))


def scenario(count: int, args: argparse.Namespace) -> tuple[float, float, float, float]:
    """(idle serve, peak serve, idle worker, peak worker) in MB: the serve process is
    the one both the SMTP and the LMTP port run in."""
    data = Path(tempfile.mkdtemp(prefix="crmdrop-memory-"))
    with bench_database(args.db, data) as url:
        env = crmdrop_env(data, url, CRMDROP_MAX_MESSAGE_SIZE=str(40 * 1024 * 1024))
        user = add_user(env)
        messages = [big_message(user["email"], args.size_mb * 1_000_000, n) for n in range(count)]
        served, smtp, lmtp = start_serve(env)
        port = lmtp if args.lmtp else smtp
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            wait_port(port)
            (worker,) = wait_for_children(served.pid)
            warm_up = [big_message(user["email"], 20_000, 0)]
            send(port, user["email"], user["dropbox"]["note"], warm_up, args.lmtp)
            wait_filed(engine)
            idle = (settled_rss_mb(served.pid), settled_rss_mb(worker))
            send(port, user["email"], user["dropbox"]["note"], messages, args.lmtp)
            wait_filed(engine)
            with engine.connect() as conn:
                statuses = conn.execute(
                    text("SELECT status, count(*) FROM deliveries GROUP BY status")
                ).all()
            assert all(s != "failed" for s, _ in statuses), statuses
            peaks = (peak_rss_mb(served.pid), peak_rss_mb(worker))
        finally:
            stop(served)
            engine.dispose()
            shutil.rmtree(data, ignore_errors=True)  # the ten messages' store: 425 MB
    return idle[0], peaks[0], idle[1], peaks[1]


def wait_for_children(pid: int) -> list[int]:
    while not (found := children(pid)):
        time.sleep(0.2)
    return found


def wait_filed(engine: Engine) -> None:
    query = text("SELECT count(*) FROM deliveries WHERE status = 'queued'")
    while True:
        with engine.connect() as conn:
            if not conn.execute(query).scalar():
                return
        time.sleep(0.2)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def settled_rss_mb(pid: int) -> float:
    """The RSS once the process has used no CPU for a second; its peak then reset to it."""
    ticks = _cpu_ticks(pid)
    while True:
        time.sleep(1.0)
        now = _cpu_ticks(pid)
        if now - ticks <= 1:
            break
        ticks = now
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    return rss_mb(pid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--size-mb", type=int, default=25)
    parser.add_argument("--many", type=int, default=10)
    parser.add_argument("--lmtp", action="store_true", help="send over LMTP, not SMTP")
    args = parser.parse_args()
    print(machine_load())
    print(f"{args.db}, over {'LMTP' if args.lmtp else 'SMTP'}:")
    for count in (1, args.many):
        s_idle, s_peak, w_idle, w_peak = scenario(count, args)
        print(
            f"{count} x {args.size_mb} MB at once: serve process peak {s_peak:.0f} MB "
            f"(idle {s_idle:.0f}, +{s_peak - s_idle:.0f}); worker peak {w_peak:.0f} MB "
            f"(idle {w_idle:.0f}, +{w_peak - w_idle:.0f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
