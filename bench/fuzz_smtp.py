"""Fuzz the SMTP dialogue of a running `crmdrop serve` (started here, SQLite, on free
ports): random and malformed command sequences, huge lines, binary, pipelining.

    .venv/bin/python bench/fuzz_smtp.py [--seconds S] [--seed N]

Counts sessions, replies by code, and replies that came from an exception (aiosmtpd's
"500 Error: (…)" or our 451); checks after every 50 sessions that the server still files
a real message. Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import SERVER_ENV  # noqa: E402
from tests.fuzzing import EXCEPTION_MARKERS, run_dialogue, smtp_dialogue  # noqa: E402
from tests.support import Cli, ServerProcess, make_message, smtp_send  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="crmdrop-smtpfuzz-"))
    server = ServerProcess(data_dir, SERVER_ENV)
    server.start()
    cli = Cli({**SERVER_ENV, "CRMDROP_DATA_DIR": str(data_dir)})
    owner = cli.add_user("fuzz@mycorp.example", "fuzz")
    rng = random.Random(args.seed)
    codes: collections.Counter[str] = collections.Counter()
    sessions = broken = checks = 0
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            chunks = smtp_dialogue(rng, owner["dropbox"]["note"], owner["email"])
            replies = run_dialogue(server.smtp_port, chunks)
            sessions += 1
            codes.update(r[:3] for r in replies)
            bad = [r for r in replies if any(m in r for m in EXCEPTION_MARKERS)]
            if bad or not replies or not replies[0].startswith("220"):
                broken += 1
                print("BROKEN", chunks[:3], bad or replies[:2], flush=True)
            if sessions % 50 == 0:
                msg = make_message(from_=owner["email"], to=["jane@customer.example"])
                assert (
                    smtp_send(server.smtp_port, owner["email"], [owner["dropbox"]["note"]], msg)
                    == {}
                )
                checks += 1
    finally:
        server.stop()
    print(f"sessions {sessions}, replies {sum(codes.values())}, from an exception {broken}")
    print(f"real messages accepted between them: {checks}; replies by code: {dict(codes)}")


if __name__ == "__main__":
    main()
