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


MAX_LEN = 65_536  # inputs are cut here, as libFuzzer's -max_len of the atheris run


def mutate(seed: bytes, rng: random.Random) -> bytes:
    """A few random edits of `seed`: bytes flipped, cut, duplicated, or a hostile splice.

    Cheap on purpose (slices and `randbytes`, no per-byte Python loop): the long run
    spends its CPU in the code under test, not here."""
    data = bytearray(seed[:MAX_LEN])
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
            data[pos:pos] = rng.randbytes(rng.randint(1, 32))
    return bytes(data[:MAX_LEN])


def mutated(seeds: list[bytes], rng: random.Random) -> Iterator[bytes]:
    while True:
        yield mutate(rng.choice(seeds), rng)


# --- SMTP dialogues ----------------------------------------------------------------

SMTP_VERBS = [b"HELO", b"EHLO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"RSET", b"NOOP", b"VRFY"]
SMTP_VERBS += [b"EXPN", b"HELP", b"QUIT", b"STARTTLS", b"AUTH PLAIN", b"BDAT 10", b"XYZZY", b""]
# aiosmtpd's reply when a handler raises and nobody catches it (ours would be a 451).
EXCEPTION_MARKERS = ("500 Error: (", "Temporary failure on our side")


def exception_replies(replies: list[str]) -> list[str]:
    """The replies that came from an exception (`EXCEPTION_MARKERS`)."""
    return [r for r in replies if any(m in r for m in EXCEPTION_MARKERS)]


def smtp_dialogue(
    rng: random.Random, dropbox: str, sender: str, verbs: list[bytes] = SMTP_VERBS
) -> list[bytes]:
    """Chunks to write to one SMTP session (or another's, with its `verbs`): commands
    valid and not, odd arguments, huge lines, binary, several commands in one write
    (pipelining), and sometimes DATA."""
    chunks: list[bytes] = []
    for _ in range(rng.randint(1, 12)):
        verb = rng.choice(verbs)
        arg = rng.choice(
            [
                b"",
                b" <" + dropbox.encode() + b">",
                b" <" + sender.encode() + b">",
                b" <>",
                b" <\xff\xfe@x.org>",
                b" " + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))),
                b" " + b"A" * rng.choice([100, 1_000, 20_000]),
                b" <a@b> SIZE=" + str(rng.randint(-5, 10**12)).encode(),
                b" <a@b> BODY=8BITMIME SMTPUTF8",
            ]
        )
        line = verb + arg + rng.choice([b"\r\n", b"\n", b"\r\n", b"\r\n\r\n"])
        if chunks and rng.random() < 0.3:
            chunks[-1] += line  # pipelined with the previous command
        else:
            chunks.append(line)
        if verb == b"DATA" and rng.random() < 0.7:
            chunks.append(_fuzz_body(rng, sender))
    return chunks


def _fuzz_body(rng: random.Random, sender: str) -> bytes:
    """A mutated message, then the end of DATA (an end inside it is stuffed away)."""
    body = mutate(b"From: " + sender.encode() + b"\r\nSubject: fuzz\r\n\r\nhi\r\n", rng)
    return body.replace(b"\r\n.\r\n", b"\r\n..\r\n") + b"\r\n.\r\n"


LMTP_VERBS = [b"LHLO", b"LHLO", *SMTP_VERBS]  # LMTP's greeting, and SMTP's (refused there)


def lmtp_dialogue(rng: random.Random, dropbox: str, sender: str) -> list[bytes]:
    """Chunks for one LMTP session: as `smtp_dialogue`, and half of them begin with a valid
    transaction (pipelined or not; most with DATA and a mutated body), so that DATA and
    the replies per recipient are reached often."""
    chunks = smtp_dialogue(rng, dropbox, sender, LMTP_VERBS)
    if rng.random() < 0.5:
        start = [b"LHLO fuzz\r\n", f"MAIL FROM:<{sender}>\r\n".encode()]
        start += [f"RCPT TO:<{dropbox}>\r\n".encode()] * rng.randint(1, 3)
        if rng.random() < 0.6:
            start += [b"DATA\r\n", _fuzz_body(rng, sender)]
        chunks = ([b"".join(start)] if rng.random() < 0.5 else start) + chunks
    return chunks


def run_dialogue(port: int, chunks: list[bytes], timeout: float = 20.0) -> list[str]:
    """Write the chunks, collecting every reply line until the server closes or idles."""
    import socket

    replies: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(0.15)
        buffer = b""
        for chunk in [b"", *chunks]:
            try:
                if chunk:
                    sock.sendall(chunk)
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    buffer += data
            except TimeoutError:
                continue
            except OSError:
                break
    replies.extend(line for line in buffer.decode("utf-8", "replace").split("\r\n") if line)
    return replies
