"""Limits for the public SMTP port: sessions in all and per client IP, and a tarpit,
then a refusal, for a client that tries many unknown dropbox addresses (a token guesser).

Plain bookkeeping with the clock passed in, so it is tested without waiting; the SMTP
shell (`receive/smtp.py`) asks it at connect and at each RCPT. Counts live in the
server's memory: a restart forgets them, which only gives a guesser a fresh hour.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

from crmdrop.config import Settings

TOO_MANY_SESSIONS = "421 4.7.0 Too many connections, please try again later"
TOO_MANY_FROM_YOU = "421 4.7.0 Too many connections from your address, please try again later"
GUESSING = "421 4.7.0 Too many unknown recipients from your address, please try again later"

WINDOW = 3600.0  # seconds an unknown recipient counts against its client


@dataclass(frozen=True)
class RcptPenalty:
    """What an RCPT from this client gets: a delay first (seconds), or a refusal."""

    delay: float
    refuse: bool


@dataclass
class PortGuard:
    """Concurrent sessions and unknown recipients, per client IP."""

    max_sessions: int
    max_per_ip: int
    tarpit_after: int  # unknown recipients in WINDOW before each RCPT is delayed
    refuse_after: int  # unknown recipients in WINDOW before the client is refused
    tarpit_seconds: float
    sessions: int = 0
    per_ip: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unknown: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))

    @classmethod
    def from_settings(cls, settings: Settings) -> PortGuard:
        return cls(
            max_sessions=settings.smtp_max_sessions,
            max_per_ip=settings.smtp_max_sessions_per_ip,
            tarpit_after=settings.smtp_unknown_rcpt_tarpit,
            refuse_after=settings.smtp_unknown_rcpt_limit,
            tarpit_seconds=settings.smtp_tarpit_seconds,
        )

    def enter(self, ip: str, now: float) -> str | None:
        """A new session: None to serve it (and count it), or the 421 to close it with."""
        if self._guesses(ip, now) >= self.refuse_after:
            return GUESSING
        if self.sessions >= self.max_sessions:
            return TOO_MANY_SESSIONS
        if self.per_ip[ip] >= self.max_per_ip:
            return TOO_MANY_FROM_YOU
        self.sessions += 1
        self.per_ip[ip] += 1
        return None

    def leave(self, ip: str) -> None:
        self.sessions -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]

    def before_rcpt(self, ip: str, now: float) -> RcptPenalty:
        """Before any RCPT is looked up: a guesser waits, then is refused."""
        guesses = self._guesses(ip, now)
        if guesses >= self.refuse_after:
            return RcptPenalty(0.0, True)
        over = guesses - self.tarpit_after + 1
        return RcptPenalty(min(30.0, self.tarpit_seconds * over) if over > 0 else 0.0, False)

    def unknown_rcpt(self, ip: str, now: float) -> None:
        """An RCPT named no live dropbox: it counts against its client for WINDOW."""
        self.unknown[ip].append(now)

    def _guesses(self, ip: str, now: float) -> int:
        if ip not in self.unknown:
            return 0
        seen = self.unknown[ip]
        while seen and seen[0] < now - WINDOW:
            seen.popleft()
        if not seen:
            del self.unknown[ip]
            return 0
        return len(seen)
