"""`crmdrop exclusions|preferences|export`: an account's settings and its whole content."""

from __future__ import annotations

from typing import Annotated

import typer

from crmdrop.cli.common import Data, JsonFlag, emit, store
from crmdrop.store import accounts, records
from crmdrop.store.export import export_account

exclusions_app = typer.Typer(no_args_is_help=True, help="An account's exclusion list.")
preferences_app = typer.Typer(no_args_is_help=True, help="An account's preferences.")


@exclusions_app.command("add")
def exclusions_add(account: str, address_or_domain: str, data: Data = None) -> None:
    """Exclude an address or a whole @domain from ever becoming a contact."""
    with store(data, write=True) as (_, session):
        pattern = accounts.add_exclusion(session, account, address_or_domain).pattern
    typer.echo(f"excluded {pattern} in account {account}")


@preferences_app.command("set")
def preferences_set(
    account: str,
    name: Annotated[str, typer.Argument(help="file-under-companies or discard-automated.")],
    value: Annotated[str, typer.Argument(help="on or off.")],
    data: Data = None,
) -> None:
    """Turn an account preference on or off."""
    with store(data, write=True) as (_, session):
        flag = records.update_preference(session, account, name, value)
    typer.echo(f"{name} is {'on' if flag else 'off'} for account {account}")


@preferences_app.command("show")
def preferences_show(account: str, as_json: JsonFlag = False, data: Data = None) -> None:
    """The account's preferences."""
    with store(data) as (_, session):
        prefs = records.preferences(session, account)
    if as_json:
        emit(prefs)
        return
    for key, flag in prefs.items():
        typer.echo(f"{key:<22} {'on' if flag else 'off'}")


def export(account: str, data: Data = None) -> None:
    """Print the whole account as JSON (fields in docs/export.md)."""
    with store(data) as (_, session):
        emit(export_account(session, account))
