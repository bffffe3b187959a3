"""`crmdrop cases|opportunities|tasks|companies|preferences` (SPEC §1.4, §5).

Thin: the queries live in `crmdrop.store.records`; this module parses arguments and
prints. The JSON shapes are a contract like the rest of the CLI (docs/records.md).
`crmdrop.cli` imports this module at its bottom, and the sub-apps register themselves on
its `app` here, so importing either module first works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from crmdrop.cli import Data, JsonFlag, _emit, _store, app
from crmdrop.store import records

cases_app = typer.Typer(no_args_is_help=True, help="Cases (CA<n>).")
opportunities_app = typer.Typer(no_args_is_help=True, help="Opportunities (CO<n>).")
tasks_app = typer.Typer(no_args_is_help=True, help="Tasks from the task dropboxes.")
companies_app = typer.Typer(no_args_is_help=True, help="Companies and their addresses.")
preferences_app = typer.Typer(no_args_is_help=True, help="An account's preferences.")
app.add_typer(cases_app, name="cases")
app.add_typer(opportunities_app, name="opportunities")
app.add_typer(tasks_app, name="tasks")
app.add_typer(companies_app, name="companies")
app.add_typer(preferences_app, name="preferences")

AccountOpt = Annotated[str, typer.Option("--account", help="The account's name.")]


def _print_records(rows: list[dict[str, Any]], label: str) -> None:
    if not rows:
        typer.echo(f"no {label}")
    for r in rows:
        contacts = ", ".join(r["contacts"]) or "no contacts"
        notes = f"{r['notes']} note" + ("" if r["notes"] == 1 else "s")
        typer.echo(f"{r['ref']:<8} {r['status']:<8} {r['title']!r}  ({contacts}; {notes})")


def _print_record(r: dict[str, Any]) -> None:
    typer.echo(f"{r['ref']} {r['title']!r} ({r['status']}), owner {r['owner'] or '-'}")
    typer.echo("contacts:")
    for c in r["contacts"]:
        typer.echo(f"  {c['name']} <{c['email']}>")
    typer.echo("notes:")
    for n in r["notes"]:
        who = f"{n['author']} <{n['author_email']}>" if n["author_email"] else n["author"]
        typer.echo(f"  #{n['id']:<6} {n['date'] or '(no date)'}  {who}  {n['subject']!r}")


def _list(
    kind: records.RecordKind, label: str, account: str, as_json: bool, data: Path | None
) -> None:
    with _store(data) as (_, session):
        rows = records.list_records(session, account, kind)
    if as_json:
        _emit(rows)
    else:
        _print_records(rows, label)


def _show(
    kind: records.RecordKind, ref: str, account: str, as_json: bool, data: Path | None
) -> None:
    with _store(data) as (_, session):
        row = records.show_record(session, account, kind, ref)
    if as_json:
        _emit(row)
    else:
        _print_record(row)


@cases_app.command("list")
def cases_list(account: AccountOpt, as_json: JsonFlag = False, data: Data = None) -> None:
    """The account's cases by reference number."""
    _list(records.CASES, "cases", account, as_json, data)


@cases_app.command("show")
def cases_show(
    ref: Annotated[str, typer.Argument(help="CA12 or 12.")],
    account: AccountOpt,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """One case: its contacts and the notes filed to it."""
    _show(records.CASES, ref, account, as_json, data)


@opportunities_app.command("list")
def opportunities_list(account: AccountOpt, as_json: JsonFlag = False, data: Data = None) -> None:
    """The account's opportunities by reference number."""
    _list(records.OPPORTUNITIES, "opportunities", account, as_json, data)


@opportunities_app.command("show")
def opportunities_show(
    ref: Annotated[str, typer.Argument(help="CO12 or 12.")],
    account: AccountOpt,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """One opportunity: its contacts and the notes filed to it."""
    _show(records.OPPORTUNITIES, ref, account, as_json, data)


@tasks_app.command("list")
def tasks_list(
    account: AccountOpt,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tasks.")] = None,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """Tasks, oldest first; due dates are calendar days in the owner's time zone."""
    with _store(data) as (_, session):
        rows = records.list_tasks(session, account, user)
    if as_json:
        _emit(rows)
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
    with _store(data, write=True) as (_, session):
        company = records.create_company(
            session, name, account=account, domain=domain, emails=email or []
        )
        row = next(c for c in records.list_companies(session, account) if c["id"] == company.id)
    if as_json:
        _emit(row)
        return
    emails = ", ".join(row["emails"]) or "no addresses"
    typer.echo(f"added company {row['name']} (domain {row['domain'] or '-'}; {emails})")


@companies_app.command("list")
def companies_list(account: AccountOpt, as_json: JsonFlag = False, data: Data = None) -> None:
    """The account's companies with their domain, addresses and contacts."""
    with _store(data) as (_, session):
        rows = records.list_companies(session, account)
    if as_json:
        _emit(rows)
        return
    if not rows:
        typer.echo("no companies")
    for c in rows:
        emails = ", ".join(c["emails"]) or "-"
        typer.echo(
            f"{c['name']}  domain {c['domain'] or '-'}  addresses {emails}  "
            f"{len(c['contacts'])} contacts"
        )


@preferences_app.command("set")
def preferences_set(
    account: str,
    name: Annotated[str, typer.Argument(help="file-under-companies or discard-automated.")],
    value: Annotated[str, typer.Argument(help="on or off.")],
    data: Data = None,
) -> None:
    """Turn an account preference on or off."""
    with _store(data, write=True) as (_, session):
        flag = records.update_preference(session, account, name, value)
    typer.echo(f"{name} is {'on' if flag else 'off'} for account {account}")


@preferences_app.command("show")
def preferences_show(account: str, as_json: JsonFlag = False, data: Data = None) -> None:
    """The account's preferences."""
    with _store(data) as (_, session):
        prefs = records.preferences(session, account)
    if as_json:
        _emit(prefs)
        return
    for key, flag in prefs.items():
        typer.echo(f"{key:<22} {'on' if flag else 'off'}")
