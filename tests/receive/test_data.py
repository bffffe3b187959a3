"""The chunked DATA reader (`receive/data.py`) against the line-at-a-time reader it
replaced (aiosmtpd's algorithm, kept here as the reference): for any bytes, split into
any reads, the same message or the same refusal, and nothing read past the end of DATA.
"""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from crmdrop.receive.data import TOO_LONG, TOO_MUCH, DataBody, read_body
from crmdrop.spool import Spool

AFTER = b"QUIT\r\n"  # a pipelined command after the end of DATA: must stay unread


async def reference(reader: asyncio.StreamReader, size_limit: int, line_limit: int) -> object:
    """The reader before the chunks: one `readuntil(CRLF)` per line, as aiosmtpd reads."""
    kept: list[bytes] = []
    size, refusal, partial = 0, None, False
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            refusal = refusal or TOO_LONG
            await reader.read(exc.consumed)
            partial = True
            continue
        if partial:
            partial = False
            continue
        if line == b".\r\n":
            break
        size += len(line)
        if refusal is None and size_limit and size > size_limit:
            refusal = TOO_MUCH
        elif refusal is None and len(line) > line_limit:
            refusal = TOO_LONG
        if refusal is None:
            kept.append(line[1:] if line.startswith(b".") else line)
    return refusal if refusal is not None else b"".join(kept)


async def chunked(reader: asyncio.StreamReader, size_limit: int, line_limit: int) -> object:
    spool = Spool(64)  # small: the roll-over to a file is exercised too
    body = DataBody(spool, size_limit=size_limit, line_limit=line_limit)
    await read_body(reader, body)
    if body.refusal is not None:
        return body.refusal
    value = spool.getvalue()
    spool.close()
    return value


def run(
    read: object, stream: bytes, cuts: list[int], size_limit: int, line_limit: int
) -> tuple[object, bytes]:
    """(what `read` made of `stream` fed in pieces at `cuts`, what it left unread)."""

    async def main() -> tuple[object, bytes]:
        reader = asyncio.StreamReader(limit=line_limit)
        points = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]

        async def feed() -> None:
            for start, end in itertools.pairwise(points):
                reader.feed_data(stream[start:end])
                await asyncio.sleep(0)
            reader.feed_eof()

        feeder = asyncio.create_task(feed())
        result = await asyncio.wait_for(read(reader, size_limit, line_limit), 5)  # type: ignore[operator]
        await feeder
        return result, await reader.read()

    return asyncio.run(main())


PIECES = st.sampled_from(
    [b".", b"..", b"\r\n", b"\n", b"\r", b"\r\n.\r", b"\n.\r\n", b"a", b"text ", b"x" * 45]
)


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(PIECES, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    size_limit=st.sampled_from([0, 20, 60, 200]),
)
def test_the_chunked_reader_reads_what_the_line_reader_read(
    body: list[bytes], cuts: list[int], size_limit: int
) -> None:
    message = b"".join(body)
    message += b"" if message.endswith(b"\r\n") or not message else b"\r\n"
    while b"\r\n.\r\n" in message:  # no end of DATA inside the message
        message = message.replace(b"\r\n.\r\n", b"\r\n..\r\n")
    if message.startswith(b".\r\n"):
        message = b"." + message
    stream = message + b".\r\n" + AFTER
    line_limit = 40
    expected = run(reference, stream, cuts, size_limit, line_limit)
    assert run(chunked, stream, cuts, size_limit, line_limit) == expected
    assert expected[1] == AFTER


def test_the_edge_cases_by_name() -> None:
    cases = {
        b".\r\n": b"",  # an empty message
        b"..\r\n.\r\n": b".\r\n",  # a stuffed lone dot
        b"a\r\n..b\r\n.c\r\n.\r\n": b"a\r\n.b\r\nc\r\n",
        b"a\n.\r\nb\r\n.\r\n": b"a\n.\r\nb\r\n",  # a bare LF before the dot ends nothing
        b"a\r\n.\n\r\n.\r\n": b"a\r\n\n\r\n",
        b"a\r\r\n.\r\n": b"a\r\r\n",
        b"\r\n.\r\n": b"\r\n",
    }
    for stream, message in cases.items():
        for cut in range(len(stream) + 1):  # the end split across two reads, everywhere
            assert run(chunked, stream + AFTER, [cut], 0, 1000) == (message, AFTER), stream


def test_the_limits_refuse_as_before_and_read_to_the_end() -> None:
    long_line = b"y" * 50 + b"\r\n"
    assert run(chunked, long_line + b".\r\n" + AFTER, [7, 30], 0, 40) == (TOO_LONG, AFTER)
    big = b"z" * 30 + b"\r\n"
    assert run(chunked, big * 5 + b".\r\n" + AFTER, [3], 100, 40) == (TOO_MUCH, AFTER)


def test_a_client_that_hangs_up_mid_data_leaves_no_message() -> None:
    async def main() -> None:
        reader = asyncio.StreamReader(limit=100)
        reader.feed_data(b"Subject: x\r\n\r\nhalf a mess")
        reader.feed_eof()
        spool = Spool(64)
        try:
            await read_body(reader, DataBody(spool, size_limit=0, line_limit=100))
        except asyncio.IncompleteReadError:
            return
        raise AssertionError("a message without its end was taken")

    asyncio.run(main())
