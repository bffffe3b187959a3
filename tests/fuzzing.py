"""The fuzz target shared by the bounded test (`tests/test_fuzz.py`, hypothesis) and the
long run (`bench/fuzz_parse.py`, atheris): one message through `parse_message` and
`decide`, as the worker runs them, with the header reader of SMTP time beside.

A run fails when our code raises, when the parser reports its own failure (the empty
fallback), or when one message takes more than `SLOW_SECONDS` of CPU time (CPU, not wall
clock: on a shared machine the wall clock measures the neighbours).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from crmdrop.dropbox.decide import decide
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.mail.headers import read_header_summary
from crmdrop.mail.parse import parse_message
from tests.dropbox.dropbox_fakes import DOMAIN, FakeAccount, make_owner

SLOW_SECONDS = 1.0
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KINDS = list(DropboxKind)


class FuzzFailure(AssertionError):
    """The input broke a promise: our exception, our fallback, or too slow."""


@dataclass(frozen=True)
class Run:
    seconds: float
    addresses: int


def check_message(data: bytes, kind_index: int = 0, *, limit: float = SLOW_SECONDS) -> Run:
    """Parse and decide `data`; raise FuzzFailure on a broken promise (`limit`: seconds,
    0 for no limit)."""
    started = time.process_time()
    read_header_summary(data)
    parsed = parse_message(data)
    if parsed.failure is not None:
        raise FuzzFailure(parsed.failure)
    plan = decide(
        parsed,
        KINDS[kind_index % len(KINDS)],
        make_owner(),
        FakeAccount(),
        dropbox_domain=DOMAIN,
        now=NOW,
        envelope_from="olivia@acme.com",
    )
    plan.to_json()  # the processing record must serialize too
    seconds = time.process_time() - started
    if limit and seconds > limit:
        raise FuzzFailure(f"one message took {seconds:.2f} s")
    return Run(seconds, len(parsed.addresses))


# Fragments that broke the parser once, spliced into seeds by the mutator.
HOSTILE = [
    b"Content-Type: text/plain; charset=idna\r\n",
    b"Content-Type: text/plain; charset=undefined\r\n",
    b'Content-Type: text/plain; charset="utf\x008"\r\n',
    b"X-Note: =?undefined?B?/w==?=\r\n",
    b"Subject: =?punycode?Q?=FF?=\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n" * 3,
    b"References: " + b"<a@b> " * 2000 + b"\r\n",
    b"To: " + b'"' * 5000 + b"\r\n",
    b"---------- Forwarded message ---------\r\nFrom: J <j@x.com>\r\nTo: <b@y.com>\r\n\r\n",
    b"\xff\xfe\x00\r\n\r\n",
    b"Content-Transfer-Encoding: base64\r\n\r\n!!!!\r\n",
    b"Message-ID: <>\r\n",
    b"Date: Mon, 99 Foo 99999 99:99:99 +9999\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: application/ms-tnef; name=winmail.dat\r\n\r\n\x78\x9f\x3e\x22",
]


def mutate(seed: bytes, rng: random.Random) -> bytes:
    """A few random edits of `seed`: bytes flipped, cut, duplicated, or a hostile splice."""
    data = bytearray(seed[:200_000])
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(5)
        pos = rng.randint(0, len(data))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            del data[pos : pos + rng.randint(1, 400)]
        elif op == 2 and data:
            start = rng.randint(0, len(data) - 1)
            data[pos:pos] = data[start : start + rng.randint(1, 2000)]
        elif op == 3:
            data[pos:pos] = rng.choice(HOSTILE)
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    return bytes(data)


def mutated(seeds: list[bytes], rng: random.Random) -> Iterator[bytes]:
    while True:
        yield mutate(rng.choice(seeds), rng)
