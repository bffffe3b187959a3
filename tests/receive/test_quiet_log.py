"""aiosmtpd logs each command line through `sanitized_log`, which hides AUTH secrets
with a regex before logging: crmdrop skips that work for a level that is off, and keeps
it (secrets hidden) for one that is on."""

from __future__ import annotations

import logging

import aiosmtpd.smtp
import pytest

import crmdrop.receive.smtp  # noqa: F401  (installs the check)

LINE = b"AUTH PLAIN c2VjcmV0\r\n"


def test_a_command_line_for_a_disabled_level_is_not_sanitized(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real = aiosmtpd.smtp.sanitize

    def counting(text: bytes) -> bytes:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(aiosmtpd.smtp, "sanitize", counting)
    log = logging.getLogger("mail.log")
    monkeypatch.setattr(log, "level", logging.WARNING)
    aiosmtpd.smtp.sanitized_log(log.debug, "_handle_client readline: %r", LINE)
    aiosmtpd.smtp.sanitized_log(log.info, "%r >> %r", ("127.0.0.1", 25), LINE)
    assert calls == []


def test_a_command_line_for_an_enabled_level_is_logged_sanitized(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("mail.log")
    with caplog.at_level(logging.DEBUG, logger="mail.log"):
        aiosmtpd.smtp.sanitized_log(log.debug, "_handle_client readline: %r", LINE)
    assert [r.getMessage() for r in caplog.records] == [
        "_handle_client readline: b'AUTH PLAIN ********\\r\\n'"
    ]
