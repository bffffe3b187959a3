"""Fuzz the SMTP (or, with `--lmtp`, the LMTP) dialogue of a running `crmdrop serve`
(started here, SQLite, on free ports): random and malformed command sequences, huge
lines, binary, pipelining.

    .venv/bin/python bench/fuzz_smtp.py [--seconds S] [--seed N] [--lmtp]

Counts sessions, replies by code, and replies that came from an exception (aiosmtpd's
"500 Error: (…)" or our 451); checks after every 50 sessions that the server still files
a real message, and at the end that the server logged no traceback. Results:
docs/reliability.md.
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
from tests.fuzzing import (  # noqa: E402
    exception_replies,
    lmtp_dialogue,
    run_dialogue,
    smtp_dialogue,
)
from tests.support import Cli, ServerProcess, make_message, smtp_send  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lmtp", action="store_true", help="the LMTP port (our own server)")
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
    port = server.lmtp_port if args.lmtp else server.smtp_port
    dialogue = lmtp_dialogue if args.lmtp else smtp_dialogue
    try:
        while time.monotonic() < deadline:
            chunks = dialogue(rng, owner["dropbox"]["note"], owner["email"])
            replies = run_dialogue(port, chunks)
            sessions += 1
            codes.update(r[:3] for r in replies)
            bad = exception_replies(replies)
            if bad or not replies or not replies[0].startswith("220"):
                broken += 1
                print("BROKEN", chunks[:3], bad or replies[:2], flush=True)
            if sessions % 50 == 0:
                msg = make_message(from_=owner["email"], to=["jane@customer.example"])
                sent = smtp_send(
                    port, owner["email"], [owner["dropbox"]["note"]], msg, lmtp=args.lmtp
                )
                assert sent == {}
                checks += 1
    finally:
        server.stop()
    print(f"sessions {sessions}, replies {sum(codes.values())}, from an exception {broken}")
    print(f"real messages accepted between them: {checks}; replies by code: {dict(codes)}")
    print(f"tracebacks in the server's log: {server.log_path.read_text().count('Traceback')}")


if __name__ == "__main__":
    main()
