"""`crmdrop tasks|companies`: tasks from the task dropboxes, and companies (SPEC §1.4, §5)."""

from __future__ import annotations

from typing import Annotated

import typer

from crmdrop.cli.common import AccountOpt, Data, JsonFlag, emit, store
from crmdrop.store import records

tasks_app = typer.Typer(no_args_is_help=True, help="Tasks from the task dropboxes.")
companies_app = typer.Typer(no_args_is_help=True, help="Companies and their addresses.")


@tasks_app.command("list")
def tasks_list(
    account: AccountOpt,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tasks.")] = None,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """Tasks, oldest first; due dates are calendar days in the owner's time zone."""
    with store(data) as (_, session):
        rows = records.list_tasks(session, account, user)
    if as_json:
        emit(rows)
        return
    if not rows:
        typer.echo("no tasks")
    for t in rows:
        due = f"due {t['due']} ({t['due_kind']}, {t['timezone']})" if t["due"] else "no deadline"
        contacts = ", ".join(t["contacts"]) or "no contacts"
        typer.echo(f"#{t['id']:<6} {t['title']!r}  {due}  owner {t['owner']}  ({contacts})")


@companies_app.command("add")
def companies_add(
    name: str,
    account: AccountOpt,
    domain: Annotated[
        str | None, typer.Option("--domain", help="New contacts at this domain join it.")
    ] = None,
    email: Annotated[
        list[str] | None,
        typer.Option("--email", help="An address of the company itself (repeatable)."),
    ] = None,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """Add a company; it matches by its own addresses, and new contacts join it by domain."""
    with store(data, write=True) as (_, session):
        company = records.create_company(
            session, name, account=account, domain=domain, emails=email or []
        )
        row = next(c for c in records.list_companies(session, account) if c["id"] == company.id)
    if as_json:
        emit(row)
        return
    emails = ", ".join(row["emails"]) or "no addresses"
    typer.echo(f"added company {row['name']} (domain {row['domain'] or '-'}; {emails})")


@companies_app.command("list")
def companies_list(account: AccountOpt, as_json: JsonFlag = False, data: Data = None) -> None:
    """The account's companies with their domain, addresses and contacts."""
    with store(data) as (_, session):
        rows = records.list_companies(session, account)
    if as_json:
        emit(rows)
        return
    if not rows:
        typer.echo("no companies")
    for c in rows:
        emails = ", ".join(c["emails"]) or "-"
        typer.echo(
            f"{c['name']}  domain {c['domain'] or '-'}  addresses {emails}  "
            f"{len(c['contacts'])} contacts"
        )
