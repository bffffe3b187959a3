"""`crmdrop explain`: the decision for a message, without filing anything."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from crmdrop.cli.common import Data, JsonFlag, emit, fail, open_db, settings_for
from crmdrop.dropbox.address import parse_dropbox_address
from crmdrop.filing import preview
from crmdrop.mail.parse import parse_message
from crmdrop.store.accounts import StoreError


def explain(
    message: Path,
    to: Annotated[str, typer.Option("--to", help="The dropbox address it was sent to.")],
    from_: Annotated[str | None, typer.Option("--from", help="Envelope sender.")] = None,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """Print the decision for a message without changing anything."""
    settings = settings_for(data)
    db = open_db(settings)
    target = parse_dropbox_address(to, settings.domain)
    if target is None:
        fail(f"{to} is not a dropbox address on {settings.domain}")
    parsed = parse_message(message.read_bytes())
    with db.reading() as session:
        try:
            shown = preview(
                session,
                parsed,
                token=target[0],
                kind=target[1],
                mail_from=from_,
                settings=settings,
                now=datetime.now(UTC),
            )
        except StoreError:
            fail(f"{to}: no such dropbox (unknown or regenerated)")
        finally:
            session.rollback()
    plan = shown.decision.plan
    result = {
        "dropbox": target[1].value,
        "owner": shown.owner_email,
        "refused": shown.decision.refused,
        "defects": parsed.defects,
        "plan": plan.to_json() if plan else None,
    }
    if as_json:
        emit(result)
    else:
        _print(result)


def _print(result: dict[str, Any]) -> None:
    typer.echo(f"dropbox: {result['dropbox']} of {result['owner']}")
    if result["refused"]:
        typer.echo(f"sender check: REFUSED — {result['refused']}")
        return
    plan = result["plan"]
    typer.echo(f"outcome: {plan['outcome']} — {plan['reason']}")
    typer.echo(f"message key: {plan['message_key']}")
    typer.echo(f"forwarded blocks ({len(plan['forwarded'])}, outermost first):")
    for i, block in enumerate(plan["forwarded"], 1):
        typer.echo(f"  [{i}] " + ", ".join(f"{k}={v}" for k, v in block.items() if v))
    typer.echo("addresses:")
    for d in plan["addresses"]:
        mark = "KEEP" if d["kept"] else "drop"
        where = ", ".join(d["where"])
        detail = f" ({d['detail']})" if d["detail"] else ""
        typer.echo(f"  {mark} {d['address']:<40} rule={d['rule']}{detail}  seen in: {where}")
    typer.echo("would file:")
    for c in plan["contacts"]:
        typer.echo(f"  {c['action']}: {c['name']} <{c['address']}>")
    for r in plan["records"]:
        typer.echo(f"  {r['action']} {r['kind']} {r['ref'] or r['title'] or ''} ({r['why']})")
    if plan["task"]:
        t = plan["task"]
        typer.echo(f"  task: {t['title']!r} due {t['due'] or 'never'}")
    if plan["note"]:
        n = plan["note"]
        typer.echo(
            f"  note: {n['subject']!r} by {n['author_name']} <{n['author_email']}>, "
            f"{n['direction']}, date {n['date']}"
        )
        _print_chain(n["chain"])
    for notice in plan["notices"]:
        typer.echo(f"  notice: {notice}")
    if plan["reply_to"]:
        typer.echo(f"  error reply to: {plan['reply_to']}")


def _person(p: dict[str, Any] | None) -> str:
    if p is None:
        return "(nobody)"
    return f"{p['name']} <{p['email']}>" if p["email"] else str(p["name"])


def _print_chain(chain: list[dict[str, Any]]) -> None:
    """The conversation the note keeps (issue #10): every message, newest first."""
    if not chain:
        return
    typer.echo(f"  conversation ({len(chain)} messages, newest first):")
    for i, m in enumerate(chain, 1):
        parts = [_person(m["author"]), f"date {m['date']}"]
        if m["to"]:
            parts.append("to " + ", ".join(_person(p) for p in m["to"]))
        if m["cc"]:
            parts.append("cc " + ", ".join(_person(p) for p in m["cc"]))
        typer.echo(f"    [{i}] " + "; ".join(parts))
        for line in m["text"].splitlines()[:3]:
            typer.echo(f"        {line}")
