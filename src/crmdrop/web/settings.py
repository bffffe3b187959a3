"""Settings pages: the user's email dropbox (/settings/dropbox, the seed's page) and, for
admins, the account's business preferences (/settings/account).

Every change goes through the store function the CLI uses too (`store.accounts`,
`store.users`, `outbound.account_mail`); a refusal (`StoreError`) is flashed on the page and
changes nothing.
"""

from __future__ import annotations

from typing import Annotated
from zoneinfo import available_timezones

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from crmdrop.dropbox.address import dropbox_addresses
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.outbound.account_mail import send_address_check
from crmdrop.store import accounts, users
from crmdrop.store.accounts import StoreError
from crmdrop.web.auth import AdminUser, CurrentUser, optional_user
from crmdrop.web.common import database, flash, redirect, render, settings_of, store_change

router = APIRouter(prefix="/settings")

PAGE = "/settings/dropbox"
WHAT_IT_DOES = {
    DropboxKind.NOTE: "Files the email as a note under its contacts.",
    DropboxKind.CASE: "Files it and opens a case, or adds it to the case whose #CA reference "
    "is in the subject.",
    DropboxKind.OPP: "Files it and opens an opportunity, or adds it to the one whose #CO "
    "reference is in the subject.",
    DropboxKind.TASK: "Makes a task of it, with no deadline.",
    DropboxKind.TODAY: "Makes a task of it, due today.",
    DropboxKind.TOMORROW: "Makes a task of it, due tomorrow.",
}
LABELS = {
    DropboxKind.NOTE: "Note",
    DropboxKind.CASE: "Case",
    DropboxKind.OPP: "Opportunity",
    DropboxKind.TASK: "Task",
    DropboxKind.TODAY: "Task due today",
    DropboxKind.TOMORROW: "Task due tomorrow",
}
TIMEZONES = sorted(available_timezones())


@router.get("")
def settings_home() -> Response:
    return redirect(PAGE)


@router.get("/dropbox")
def dropbox_page(request: Request, user: CurrentUser) -> Response:
    with database(request).reading() as session:
        mine = users.dropbox_settings(session, user.id)
        excluded = accounts.exclusions(session, user.account_name)
    addresses = dropbox_addresses(mine.token, settings_of(request).domain)
    boxes = [(LABELS[k], a, WHAT_IT_DOES[k]) for k, a in addresses.items()]
    return render(
        request, "settings/dropbox.html", boxes=boxes, mine=mine, exclusions=excluded,
        timezones=TIMEZONES,
    )  # fmt: skip


@router.get("/dropbox.vcf")
def dropbox_vcard(request: Request, user: CurrentUser) -> Response:
    """A contact card holding the six addresses, for the user's address book."""
    with database(request).reading() as session:
        token = users.dropbox_settings(session, user.id).token
    addresses = dropbox_addresses(token, settings_of(request).domain)
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        "FN:crmdrop dropbox",
        "N:dropbox;crmdrop;;;",
        "ORG:crmdrop",
        *(f"EMAIL;TYPE=INTERNET:{a}" for a in addresses.values()),
        f"NOTE:Your crmdrop dropbox addresses ({user.email}). CC\\, BCC or forward mail here.",
        "END:VCARD",
    ]
    return Response(
        "\r\n".join(lines) + "\r\n",
        media_type="text/vcard; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="crmdrop-dropbox.vcf"'},
    )


Field = Annotated[str, Form()]


@router.post("/dropbox/addresses")
def add_address(request: Request, user: CurrentUser, address: Field = "") -> Response:
    with store_change(request, f"Added {address.strip()}. Validate it to get replies there.") as s:
        accounts.add_user_address(s, user.email, address)
    return redirect(PAGE + "#addresses")


@router.post("/dropbox/addresses/remove")
def remove_address(request: Request, user: CurrentUser, address: Field = "") -> Response:
    with store_change(request, f"Removed {address}.") as s:
        accounts.remove_user_address(s, user.email, address)
    return redirect(PAGE + "#addresses")


@router.post("/dropbox/addresses/validate")
def validate_address(request: Request, user: CurrentUser, address: Field = "") -> Response:
    with store_change(request, f"We mailed a link to {address}: open it to validate it.") as s:
        mine = users.dropbox_settings(s, user.id)
        if address not in {a.email for a in mine.addresses}:
            raise accounts.Missing(f"{address} is not one of your additional addresses (any more)")
        send_address_check(s, settings_of(request), user.email, address)
    return redirect(PAGE + "#addresses")


@router.get("/dropbox/verify/{token}")
def verify_link(request: Request, token: str) -> Response:
    """The link of an address check (no sign-in needed: the token proves the mailbox)."""
    try:
        with database(request).writing() as session:
            address = users.confirm_address(session, token).email
    except StoreError as exc:
        return render(request, "error.html", 410, title="Link expired", message=str(exc))
    if optional_user(request) is None:
        return render(request, "message.html", title="Address validated",
                      message=f"{address} is validated.")  # fmt: skip
    flash(request, f"{address} is validated.", "success")
    return redirect(PAGE + "#addresses")


@router.post("/dropbox/exclusions")
def add_exclusion(request: Request, user: AdminUser, pattern: Field = "") -> Response:
    added: list[str] = []
    with store_change(request) as s:
        added.append(accounts.add_exclusion(s, user.account_name, pattern).pattern)
    for entry in added:
        flash(request, f"{entry} is on the exclusion list: it never becomes a contact.", "success")
    return redirect(PAGE + "#exclusions")


@router.post("/dropbox/exclusions/remove")
def remove_exclusion(request: Request, user: AdminUser, pattern: Field = "") -> Response:
    with store_change(request, f"{pattern} is off the exclusion list.") as s:
        accounts.remove_exclusion(s, user.account_name, pattern)
    return redirect(PAGE + "#exclusions")


@router.post("/dropbox/reply-all")
def reply_all(request: Request, user: CurrentUser, accept: Field = "") -> Response:
    on = accept == "on"
    said = "files" if on else "does not file"
    with store_change(request, f"Your dropbox now {said} a contact's reply-all.") as s:
        accounts.set_reply_all(s, user.email, on)
    return redirect(PAGE + "#reply-all")


@router.post("/dropbox/timezone")
def timezone(request: Request, user: CurrentUser, timezone: Field = "") -> Response:
    with store_change(request, f"Your time zone is {timezone}.") as s:
        accounts.set_timezone(s, user.email, timezone)
    return redirect(PAGE + "#timezone")


@router.get("/dropbox/regenerate")
def regenerate_confirm(request: Request, user: CurrentUser) -> Response:
    return render(request, "settings/regenerate.html")


@router.post("/dropbox/regenerate")
def regenerate(request: Request, user: CurrentUser, confirm: Field = "") -> Response:
    if confirm != "yes":
        flash(request, "Nothing changed: tick the box to confirm.", "error")
        return redirect(PAGE + "/regenerate")
    done = "You have six new dropbox addresses. The old ones are refused from now on."
    with store_change(request, done) as s:
        accounts.regenerate_token(s, user.email)
    return redirect(PAGE)


@router.get("/account")
def account_page(request: Request, user: AdminUser) -> Response:
    with database(request).reading() as session:
        account = accounts.get_account(session, user.account_name)
        under_companies = account.file_under_companies
    return render(request, "settings/account.html", file_under_companies=under_companies)


@router.post("/account")
def account_save(request: Request, user: AdminUser, file_under_companies: Field = "") -> Response:
    on = file_under_companies == "on"
    with store_change(request, "Saved.") as s:
        accounts.set_preference(s, user.account_name, "file-under-companies", on)
    return redirect("/settings/account")
