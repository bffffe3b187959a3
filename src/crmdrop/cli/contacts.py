"""`crmdrop contacts list|merge`: the contacts pages' behaviours at the command line,
calling the same store functions as the web pages (one behaviour, three doors)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from crmdrop.cli.common import Data, JsonFlag, emit, store
from crmdrop.store import accounts, contacts

contacts_app = typer.Typer(no_args_is_help=True, help="Contacts: list, search, merge.")

AccountOpt = Annotated[str, typer.Option("--account", help="The account's name.")]


def _contact(session: Session, account_id: int, ref: str) -> int:
    """A contact named by id or by one of its addresses."""
    return int(ref) if ref.isdigit() else contacts.contact_by_address(session, account_id, ref)


@contacts_app.command("list")
def contacts_list(
    account: AccountOpt,
    search: Annotated[str, typer.Option("--search", help="Name, address or company.")] = "",
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """The account's contacts, most recent activity first (the first page)."""
    with store(data) as (_, session):
        page = contacts.list_contacts(
            session, accounts.get_account(session, account).id, search=search
        )
    if as_json:
        emit([asdict(r) for r in page.rows])
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
    with store(data, write=True) as (_, session):
        account_id = accounts.get_account(session, account).id
        row = contacts.merge_contacts(
            session, account_id, _contact(session, account_id, keep),
            _contact(session, account_id, other),
        )  # fmt: skip
    typer.echo(f"merged into #{row.id} {row.name}")
