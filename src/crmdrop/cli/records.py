"""`crmdrop cases|opportunities list|show` (SPEC §5): one implementation, two kinds.

No `from __future__ import annotations` here: typer reads the annotations of the
commands `record_group` defines, and they refer to its local `kind`.

Thin: the queries live in `crmdrop.store.records`; this module parses arguments and
prints. The JSON shapes are a contract like the rest of the CLI (docs/records.md).
"""

from typing import Annotated, Any

import typer

from crmdrop.cli.common import AccountOpt, Data, JsonFlag, emit, store
from crmdrop.store import records


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


def record_group(kind: records.RecordKind, label: str) -> typer.Typer:
    """The `list` and `show` commands of one record kind (`label`: "cases")."""
    group = typer.Typer(no_args_is_help=True, help=f"{label.capitalize()} ({kind.prefix}<n>).")

    @group.command("list", help=f"The account's {label} by reference number.")
    def list_(account: AccountOpt, as_json: JsonFlag = False, data: Data = None) -> None:
        with store(data) as (_, session):
            rows = records.list_records(session, account, kind)
        if as_json:
            emit(rows)
        else:
            _print_records(rows, label)

    @group.command("show", help=f"One {kind.name}: its contacts and the notes filed to it.")
    def show(
        ref: Annotated[str, typer.Argument(help=f"{kind.prefix}12 or 12.")],
        account: AccountOpt,
        as_json: JsonFlag = False,
        data: Data = None,
    ) -> None:
        with store(data) as (_, session):
            row = records.show_record(session, account, kind, ref)
        if as_json:
            emit(row)
        else:
            _print_record(row)

    return group


cases_app = record_group(records.CASES, "cases")
opportunities_app = record_group(records.OPPORTUNITIES, "opportunities")
