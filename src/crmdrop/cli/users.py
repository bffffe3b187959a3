"""`crmdrop users|addresses|dropbox`: users, their own addresses, their dropboxes."""

from __future__ import annotations

from typing import Annotated

import typer
from argon2 import PasswordHasher

from crmdrop.cli.common import Data, JsonFlag, fail, print_user, store, user_shape
from crmdrop.store import accounts

users_app = typer.Typer(no_args_is_help=True, help="Users and their dropboxes.")
addresses_app = typer.Typer(no_args_is_help=True, help="A user's additional addresses.")
dropbox_app = typer.Typer(no_args_is_help=True, help="Dropbox addresses.")


@users_app.command("add")
def users_add(
    email: str,
    name: Annotated[str, typer.Option("--name")],
    account: Annotated[str, typer.Option("--account")],
    timezone: Annotated[str, typer.Option("--timezone")] = "UTC",
    password: Annotated[str | None, typer.Option("--password")] = None,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """Sign a user up and print their six dropbox addresses."""
    hashed = PasswordHasher().hash(password) if password else None
    with store(data, write=True) as (settings, session):
        user = accounts.add_user(
            session, email, name=name, account=account, timezone=timezone, password_hash=hashed
        )
        shown = user_shape(session, user, settings.domain)
    print_user(shown, as_json)  # only once committed


@users_app.command("show")
def users_show(email: str, as_json: JsonFlag = False, data: Data = None) -> None:
    """Print a user and their six dropbox addresses (same JSON as `users add`)."""
    with store(data) as (settings, session):
        shown = user_shape(session, accounts.get_user(session, email), settings.domain)
    print_user(shown, as_json)


@users_app.command("reply-all")
def users_reply_all(email: str, setting: str, data: Data = None) -> None:
    """`on`: a contact replying to all on a thread the user copied may file (SPEC §3.2)."""
    if setting not in ("on", "off"):
        fail(f"say on or off, not {setting!r}")
    with store(data, write=True) as (_, session):
        accounts.set_reply_all(session, email, setting == "on")
    typer.echo(f"reply-all from contacts is {setting} for {email}")


@addresses_app.command("add")
def addresses_add(user_email: str, address: str, data: Data = None) -> None:
    """Add an address that counts as the user's own (SPEC §1.2)."""
    with store(data, write=True) as (_, session):
        added = accounts.add_user_address(session, user_email, address).email
    typer.echo(f"added {added} to {user_email} (not verified yet)")


@addresses_app.command("verify")
def addresses_verify(user_email: str, address: str, data: Data = None) -> None:
    """Mark an additional address verified: error replies may go to it (SPEC §1.2, §6.4)."""
    with store(data, write=True) as (_, session):
        verified = accounts.verify_address(session, user_email, address).email
    typer.echo(f"{verified} is verified for {user_email}")


@dropbox_app.command("regenerate")
def dropbox_regenerate(user_email: str, as_json: JsonFlag = False, data: Data = None) -> None:
    """Give the user a new token; the six old addresses stop working at once."""
    with store(data, write=True) as (settings, session):
        shown = user_shape(session, accounts.regenerate_token(session, user_email), settings.domain)
    print_user(shown, as_json)  # only once committed: the old addresses are dead now
