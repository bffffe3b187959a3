"""A large base64 attachment left encoded where it lies in the raw message.

Decoding a 25 MB attachment while parsing holds it three times (the encoded text as
`str`, as `bytes`, and decoded). Left as slices of the raw message, it is decoded a
chunk at a time by whoever stores it: memory stays at one chunk.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK = 1024 * 1024  # encoded bytes decoded at a time (a multiple of 4 is not needed)

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
# Line breaks and anything else outside the alphabet are skipped, as the stdlib does.
_SKIP = bytes(b for b in range(256) if b not in _ALPHABET)


@dataclass(frozen=True)
class EncodedPayload:
    """Base64 text in pieces (slices of the raw message, short `bytes` between them)."""

    pieces: tuple[bytes | memoryview, ...]
    size: int  # decoded

    @classmethod
    def read(cls, pieces: tuple[bytes | memoryview, ...]) -> EncodedPayload:
        """Measure the decoded size (one decoding pass, a chunk at a time).

        Raises `binascii.Error` for base64 the stdlib would have to repair: the caller
        then decodes it the ordinary way.
        """
        payload = cls(pieces, 0)
        return cls(pieces, sum(len(chunk) for chunk in payload.chunks()))

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The decoded bytes, in order, about `size` at a time."""
        carry = b""
        padded = False  # base64 ends at its padding; more after it: not ours to guess
        for piece in self.pieces:
            for start in range(0, len(piece), size):
                text = carry + bytes(piece[start : start + size]).translate(None, _SKIP)
                if padded and text:
                    raise binascii.Error("base64 continues after its padding")
                padded = b"=" in text
                if padded and text.rstrip(b"=").find(b"=") >= 0:
                    raise binascii.Error("padding inside base64")
                whole = len(text) - len(text) % 4
                if whole:
                    yield binascii.a2b_base64(text[:whole], strict_mode=False)
                carry = text[whole:]
        if carry.rstrip(b"="):  # a last group without its padding, as `decode_b` adds it
            yield binascii.a2b_base64(carry + b"==="[: 4 - len(carry)])
