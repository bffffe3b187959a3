"""`crmdrop mta postfix` and `crmdrop imap`: wiring crmdrop to the mail systems around it."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from crmdrop.cli.common import Data, fail, open_db, settings_for

mta_app = typer.Typer(no_args_is_help=True, help="Wiring a mail server in front of crmdrop.")


@mta_app.command("postfix")
def mta_postfix(
    lmtp: Annotated[
        str | None, typer.Option(help="HOST:PORT of crmdrop's LMTP (default: the setting).")
    ] = None,
    data: Data = None,
) -> None:
    """Print the `postconf -e` lines that put a local Postfix in front of crmdrop."""
    from crmdrop.integrations.postfix import DEFAULT_POLICY, postconf_block

    settings = settings_for(data)
    policy = settings.postfix_policy_listen
    if not policy:
        typer.echo(f"# first run crmdrop serve with CRMDROP_POSTFIX_POLICY_LISTEN={DEFAULT_POLICY}")
    block = postconf_block(
        settings, lmtp=lmtp or settings.lmtp_listen, policy=policy or DEFAULT_POLICY
    )
    typer.echo(block, nl=False)


def imap(
    data: Data = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    parent: Annotated[int | None, typer.Option(help="Stop when this process is gone.")] = None,
) -> None:
    """Watch the IMAP mailbox (CRMDROP_IMAP_*) and queue what arrives, like SMTP would."""
    from crmdrop.integrations.imap import watch
    from crmdrop.receive.service import Receiver

    settings = settings_for(data)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.imap_host or not settings.imap_user:
        fail("set CRMDROP_IMAP_HOST, CRMDROP_IMAP_USER and CRMDROP_IMAP_PASSWORD")
    watch(Receiver(open_db(settings), settings), settings, once=once, parent=parent)
