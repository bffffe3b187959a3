"""Password hashing: argon2id with argon2-cffi's defaults (RFC 9106, low-memory profile).

A hash or a check costs about 0.4 s of CPU here, on purpose: web callers run these in a
thread (`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
# Checked when there is no such user, so an unknown email costs what a wrong password does.
_DUMMY = _HASHER.hash("crmdrop: no such user")

MIN_LENGTH = 8


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a missing hash is checked against a dummy (same cost)."""
    try:
        return _HASHER.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"A password needs at least {MIN_LENGTH} characters."
    return None
