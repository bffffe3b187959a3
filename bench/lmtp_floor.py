"""A minimal LMTP responder in Python, for `bench_postfix.py --floor`: the CPU floor of a
Python event loop answering Postfix's LMTP client.

One `asyncio.Protocol` per connection parses the (pipelined) commands out of its buffer
and answers at once; DATA is skipped up to its end and answered `250` per recipient.
Nothing is stored, checked or unstuffed: what it costs per message is what the event
loop, the sockets and the line parsing cost, below which no Python LMTP server gets.
Optional: a delay (ms) before each end-of-DATA reply, to see what a slow next hop costs
Postfix.

    python bench/lmtp_floor.py PORT [DELAY_MS]
"""

from __future__ import annotations

import asyncio
import sys

_END = b"\r\n.\r\n"


class FloorLMTP(asyncio.Protocol):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buffer = b""
        self.in_data = False
        self.recipients = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 floor LMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buffer, replies = self.buffer + data, []
        while True:
            if self.in_data:
                end = buffer.find(_END)
                if end < 0:
                    buffer = buffer[-4:]  # the end may straddle two reads
                    break
                buffer, self.in_data = buffer[end + len(_END) :], False
                reply = b"250 2.0.0 OK\r\n" * max(1, self.recipients)
                self.recipients = 0
                if self.delay:
                    asyncio.get_running_loop().call_later(self.delay, self.transport.write, reply)
                else:
                    replies.append(reply)
                continue
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                break
            verb, buffer = buffer[:4].upper(), buffer[line_end + 2 :]
            if verb == b"LHLO":
                replies.append(b"250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                self.in_data = True
                replies.append(b"354 go ahead\r\n")
                buffer = b"\r\n" + buffer  # so that an empty body ends at `_END` too
            elif verb == b"RCPT":
                self.recipients += 1
                replies.append(b"250 2.1.5 OK\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"".join([*replies, b"221 2.0.0 bye\r\n"]))
                self.transport.close()
                return
            else:  # MAIL, RSET, NOOP
                replies.append(b"250 2.0.0 OK\r\n")
        self.buffer = buffer
        if replies:
            self.transport.write(b"".join(replies))


async def serve(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FloorLMTP(delay), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    delay_ms = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    asyncio.run(serve(int(sys.argv[1]), delay_ms / 1000))
