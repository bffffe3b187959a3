"""`crmdrop tokens|webhooks`: personal API tokens and outbound webhook endpoints.

Thin: the work is in `crmdrop.store.tokens` and `crmdrop.store.webhooks`, which the API
uses too. The JSON shapes are a contract (docs/api.md, docs/webhooks.md).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from crmdrop.cli.common import Data, JsonFlag, emit, fail, store
from crmdrop.store import tokens, webhooks
from crmdrop.store.accounts import get_account, now

tokens_app = typer.Typer(no_args_is_help=True, help="Personal API tokens (docs/api.md).")
webhooks_app = typer.Typer(no_args_is_help=True, help="Outbound webhooks (docs/webhooks.md).")


def _jsonable(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(value).items()
    }
    return out


@tokens_app.command("create")
def tokens_create(
    user_email: str,
    name: Annotated[str, typer.Option("--name", help="What the token is for.")],
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """Make a token that acts as the user; it is shown this once only."""
    with store(data, write=True) as (_, session):
        token_id, token = tokens.create_token(session, user_email, name, now=now())
    if as_json:
        emit({"id": token_id, "token": token})
        return
    typer.echo(f"token #{token_id} for {user_email} (shown only now, keep it safe):")
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(user_email: str, as_json: JsonFlag = False, data: Data = None) -> None:
    """The user's tokens (never the tokens themselves)."""
    with store(data) as (_, session):
        rows = [_jsonable(t) for t in tokens.list_tokens(session, user_email)]
    if as_json:
        emit(rows)
        return
    if not rows:
        typer.echo(f"no tokens for {user_email}")
    for r in rows:
        state = f"revoked {r['revoked_at'][:19]}" if r["revoked_at"] else "live"
        used = r["last_used_at"][:19] if r["last_used_at"] else "never"
        typer.echo(f"#{r['id']:<5} {r['name']!r:<30} {state:<28} last used {used}")


@tokens_app.command("revoke")
def tokens_revoke(token_id: int, data: Data = None) -> None:
    """Revoke a token at once: the next request with it gets 401."""
    with store(data, write=True) as (_, session):
        info = tokens.revoke_token(session, token_id, now=now())
    typer.echo(f"token #{info.id} ({info.name!r} of {info.user}) is revoked")


@webhooks_app.command("add")
def webhooks_add(
    account: str,
    url: str,
    events: Annotated[
        str, typer.Option("--events", help="Comma-separated: " + ",".join(webhooks.Event))
    ],
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """Register an endpoint; prints its signing secret (whsec_...)."""
    with store(data, write=True) as (settings, session):
        acc = get_account(session, account)
        endpoint, secret = webhooks.add_endpoint(
            session,
            acc.id,
            url,
            events,
            user_id=None,
            now=now(),
            allow_private=settings.webhook_allow_private,
        )
        endpoint_id = endpoint.id
    if as_json:
        emit({"id": endpoint_id, "secret": secret})
        return
    typer.echo(f"webhook endpoint #{endpoint_id} for {account}; its signing secret:")
    typer.echo(secret)


@webhooks_app.command("list")
def webhooks_list(account: str, as_json: JsonFlag = False, data: Data = None) -> None:
    """The account's endpoints with their last attempts."""
    with store(data) as (_, session):
        acc = get_account(session, account)
        rows = []
        for e in webhooks.list_endpoints(session, acc.id):
            row = _jsonable(e)
            row["last_attempts"] = [
                _jsonable(a) for a in webhooks.last_attempts(session, e.id, limit=5)
            ]
            rows.append(row)
    if as_json:
        emit(rows)
        return
    if not rows:
        typer.echo(f"no webhook endpoints in {account}")
    for r in rows:
        state = "enabled" if r["enabled"] else f"DISABLED {r['disabled_at'][:19]}"
        typer.echo(f"#{r['id']:<5} {r['url']}  [{state}]  {','.join(r['events'])}")
        for a in r["last_attempts"]:
            result = a["status_code"] or a["error"]
            typer.echo(f"    {a['attempted_at'][:19]} {a['event']:<20} {result}")


@webhooks_app.command("remove")
def webhooks_remove(endpoint_id: int, data: Data = None) -> None:
    """Remove an endpoint with its queued messages and attempts log."""
    with store(data, write=True) as (_, session):
        try:
            webhooks.remove_endpoint(session, endpoint_id, None)
        except LookupError as exc:
            fail(str(exc).strip("'\""))
    typer.echo(f"webhook endpoint #{endpoint_id} removed")


@webhooks_app.command("enable")
def webhooks_enable(endpoint_id: int, data: Data = None) -> None:
    """Turn a disabled endpoint back on (its queued messages are sent again)."""
    with store(data, write=True) as (_, session):
        try:
            webhooks.enable_endpoint(session, endpoint_id, None)
        except LookupError as exc:
            fail(str(exc).strip("'\""))
    typer.echo(f"webhook endpoint #{endpoint_id} enabled")
