"""`crmdrop serve|worker|ingest`: the long-running processes and the MTA pipe."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer
from argon2 import PasswordHasher

from crmdrop.cli.common import Data, fail, open_db, print_user, settings_for, user_shape
from crmdrop.config import Settings
from crmdrop.store import accounts
from crmdrop.store.db import Database

# sysexits(3) codes for `ingest` (an MTA pipe transport reads them)
EX_OK, EX_DATAERR, EX_NOUSER, EX_TEMPFAIL, EX_NOPERM = 0, 65, 67, 75, 77

DEMO_USER, DEMO_PASSWORD, DEMO_ACCOUNT = "demo@example.com", "demo", "demo"


def exit_code(reply: str) -> int:
    """The sysexits code an MTA pipe transport understands for an SMTP reply line."""
    if reply.startswith("2"):
        return EX_OK
    if reply.startswith("4"):
        return EX_TEMPFAIL
    if reply.startswith("550 5.1.1"):
        return EX_NOUSER
    if reply.startswith("552"):
        return EX_DATAERR
    return EX_NOPERM


def _log_to_stderr(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def serve(
    data: Data = None,
    smtp: Annotated[str | None, typer.Option(help="SMTP HOST:PORT")] = None,
    lmtp: Annotated[str | None, typer.Option(help="LMTP HOST:PORT")] = None,
    http: Annotated[str | None, typer.Option(help="Web HOST:PORT")] = None,
    no_demo: Annotated[
        bool, typer.Option("--no-demo", help="Do not create the demo account.")
    ] = False,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Run no worker here (`crmdrop worker` elsewhere).")
    ] = False,
) -> None:
    """Run SMTP, LMTP, the web page, the worker and the reply sender."""
    from crmdrop.serve import serve as run

    settings = settings_for(data, smtp_listen=smtp, lmtp_listen=lmtp, http_listen=http)
    _log_to_stderr(settings)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    db = open_db(settings)
    if not no_demo:
        _demo(db, settings)
    asyncio.run(run(db, settings, worker=not no_worker))


def worker(
    data: Data = None,
    parent: Annotated[int | None, typer.Option(help="Stop when this process is gone.")] = None,
) -> None:
    """File queued deliveries and send replies (serve runs one; more may run on PostgreSQL)."""
    from crmdrop.serve import run_worker

    settings = settings_for(data)
    _log_to_stderr(settings)
    run_worker(open_db(settings), settings, parent=parent)


def _demo(db: Database, settings: Settings) -> None:
    """Create the demo account once, and print how to use it every time."""
    with db.writing() as session:
        user = accounts.find_user(session, DEMO_USER)
        if user is None:
            user = accounts.add_user(
                session,
                DEMO_USER,
                name="Demo User",
                account=DEMO_ACCOUNT,
                password_hash=PasswordHasher().hash(DEMO_PASSWORD),
            )
        shown = user_shape(session, user, settings.domain)
    typer.echo(f"demo account: user {DEMO_USER}, password {DEMO_PASSWORD}")
    print_user(shown, as_json=False)


def ingest(
    to: Annotated[str, typer.Option("--to", help="The dropbox address (envelope recipient).")],
    from_: Annotated[str, typer.Option("--from", help="Envelope sender; empty for <>.")] = "",
    data: Data = None,
) -> None:
    """Read one message on stdin and queue it (for an MTA pipe transport; sysexits codes)."""
    from crmdrop.receive.authcheck import configure_resolver
    from crmdrop.receive.service import Receiver

    settings = settings_for(data)
    if settings.sender_auth == "dns":
        configure_resolver(settings.dns_resolver, settings.dns_timeout)
    try:
        db = open_db(settings)
        receiver = Receiver(db, settings)
        reply, rcpt = receiver.check_recipient(to)
    except Exception as exc:  # our fault: the MTA must retry
        fail(f"temporary failure: {exc}", EX_TEMPFAIL)
    if rcpt is None:
        fail(reply, EX_NOUSER)
    raw = sys.stdin.buffer.read()
    verdict = receiver.accept(mail_from=from_, rcpts=[rcpt], raw=raw, protocol="pipe", peer="stdin")
    line = verdict.replies[0]
    code = exit_code(line)
    typer.echo(line, err=code != EX_OK)
    raise typer.Exit(code)
