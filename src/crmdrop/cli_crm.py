"""`crmdrop contacts list|merge` and `crmdrop deliveries undo`: the CRM pages' behaviours
at the command line, calling the same store functions as the web pages (one behaviour,
three doors). Registered on `crmdrop.cli.app` like `cli_records`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from crmdrop.cli import Data, JsonFlag, _emit, _store, app, deliveries_app
from crmdrop.store import accounts
from crmdrop.store import contacts as store
from crmdrop.store.deliveries import undo_filing

contacts_app = typer.Typer(no_args_is_help=True, help="Contacts: list, search, merge.")
app.add_typer(contacts_app, name="contacts")

AccountOpt = Annotated[str, typer.Option("--account", help="The account's name.")]


def _contact(session: Session, account_id: int, ref: str) -> int:
    """A contact named by id or by one of its addresses."""
    return int(ref) if ref.isdigit() else store.contact_by_address(session, account_id, ref)


@contacts_app.command("list")
def contacts_list(
    account: AccountOpt,
    search: Annotated[str, typer.Option("--search", help="Name, address or company.")] = "",
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """The account's contacts, most recent activity first (the first page)."""
    with _store(data) as (_, session):
        page = store.list_contacts(
            session, accounts.get_account(session, account).id, search=search
        )
    if as_json:
        _emit([asdict(r) for r in page.rows])
        return
    for r in page.rows:
        company = f" ({r.company.label})" if r.company else ""
        typer.echo(f"#{r.id:<7} {r.name} <{r.email or '-'}>{company}")


@contacts_app.command("merge")
def contacts_merge(
    keep: Annotated[str, typer.Argument(help="The contact to keep: id or address.")],
    other: Annotated[str, typer.Argument(help="The contact merged into it: id or address.")],
    account: AccountOpt,
    data: Data = None,
) -> None:
    """Merge one contact into another: every note and address is kept."""
    with _store(data, write=True) as (_, session):
        account_id = accounts.get_account(session, account).id
        row = store.merge_contacts(
            session, account_id, _contact(session, account_id, keep),
            _contact(session, account_id, other),
        )  # fmt: skip
    typer.echo(f"merged into #{row.id} {row.name}")


@deliveries_app.command("undo")
def deliveries_undo(
    delivery_id: int,
    user: Annotated[str, typer.Option("--as", help="The user who undoes it (recorded).")],
    data: Data = None,
) -> None:
    """Undo a filing: remove its note and what it created that nothing else uses."""
    with _store(data, write=True) as (_, session):
        who = accounts.get_user(session, user)
        result = undo_filing(session, who.account_id, who.id, delivery_id, now=datetime.now(UTC))
    typer.echo(f"removed: {', '.join(result.removed) or 'nothing'}")
    if result.kept:
        typer.echo(f"kept (still used): {', '.join(result.kept)}")
