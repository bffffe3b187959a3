"""The Email dropbox settings page and the admin pages in a real browser (Chromium), on
SQLite and PostgreSQL: what a user does there, checked by its effect (clipboard, download,
mail at the relay, SMTP replies, the filed contacts), and axe on every page."""

from __future__ import annotations

import smtplib
import uuid

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support import make_message, smtp_send, wait_for
from tests.web.conftest import (
    Web,
    assert_accessible,
    link_in,
    logged_in_page,
    mail_to,
    screenshot,
)

PAGE = "/settings/dropbox"


def test_copy_a_dropbox_address_and_download_the_vcard(page: Page, web: Web) -> None:
    user = web.new_user()
    logged_in_page(page, web, user, next=PAGE)
    expect(page.get_by_role("heading", name="Email dropbox", exact=True)).to_be_visible()
    assert_accessible(page)
    if web.backend == "sqlite":
        screenshot(page, "settings-dropbox")
    note = user.dropbox["note"]
    expect(page.get_by_role("row", name="Note")).to_contain_text(note)
    button = page.get_by_role("button", name="Copy the Note address")
    button.click()
    expect(button).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == note
    with page.expect_download() as info:
        page.get_by_role("button", name="Add to address book").click()
    card = info.value.path().read_text()
    assert card.startswith("BEGIN:VCARD") and card.rstrip().endswith("END:VCARD")
    assert sorted(
        line.split(":", 1)[1].strip() for line in card.splitlines() if line.startswith("EMAIL")
    ) == sorted(user.dropbox.values())


def test_add_and_validate_an_additional_address(page: Page, web: Web) -> None:
    user = web.new_user()
    extra = f"me-{uuid.uuid4().hex[:8]}@home.example"
    logged_in_page(page, web, user, next=PAGE)
    page.get_by_label("Add an address").fill(extra)
    page.get_by_role("button", name="Add", exact=True).click()
    row = page.locator(f'tr[data-address="{extra}"]')
    expect(row).to_contain_text("not verified")
    row.get_by_role("button", name=f"Validate {extra}").click()
    expect(page.get_by_role("status")).to_contain_text(f"We mailed a link to {extra}")
    link = link_in(mail_to(web, extra), "/settings/dropbox/verify/")
    page.goto(link)
    expect(page.get_by_role("status")).to_have_text(f"{extra} is validated.")
    expect(row).to_contain_text("verified")
    expect(row).not_to_contain_text("not verified")
    assert_accessible(page)
    page.goto(link)  # once only
    expect(page.get_by_role("alert")).to_have_text("This link has expired or was already used.")


def test_an_exclusion_keeps_an_address_from_becoming_a_contact(page: Page, web: Web) -> None:
    user = web.new_user()
    logged_in_page(page, web, user, next=PAGE)
    page.get_by_label("Exclude an address or @domain").fill("@Competitor.example")
    page.get_by_role("button", name="Exclude").click()
    expect(page.locator("ul.exclusions")).to_contain_text("@competitor.example")
    msg = make_message(
        from_=user.email, to=["spy@competitor.example", "buyer@client.example"], subject="Offer"
    )
    smtp_send(web.crm.smtp, user.email, [user.dropbox["note"]], msg)
    data = web.crm.settled(user.account)
    emails = {e for c in data["contacts"] for e in c["emails"]}
    assert "buyer@client.example" in emails and "spy@competitor.example" not in emails


def test_regenerate_refuses_the_old_addresses_and_lists_the_attempts(page: Page, web: Web) -> None:
    user = web.new_user()
    old = user.dropbox["note"]
    logged_in_page(page, web, user, next=PAGE)
    page.get_by_role("button", name="Regenerate my addresses…").click()
    expect(page.get_by_text("Your six old dropbox addresses stop working at once.")).to_be_visible()
    assert_accessible(page)
    page.get_by_label("I understand: the old addresses stop working now").check()
    page.get_by_role("button", name="Regenerate", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("You have six new dropbox addresses.")
    new = page.get_by_test_id("dropbox-0").inner_text()
    assert new != old and new.endswith("@dropbox.test")
    sender = f"someone-{uuid.uuid4().hex[:6]}@outside.example"
    msg = make_message(from_=user.email, to=["c@client.example"])
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        smtp_send(web.crm.smtp, sender, [old], msg)
    assert refused.value.recipients[old][0] == 550
    assert smtp_send(web.crm.smtp, user.email, [new], msg) == {}
    page.reload()
    attempts = page.locator("table.revoked")
    expect(attempts).to_contain_text(sender)
    expect(attempts).to_contain_text("refused")


def test_an_invited_colleague_gets_their_own_dropbox_in_the_same_account(
    page: Page, web: Web, browser: Browser
) -> None:
    admin = web.new_user()
    colleague = f"colleague-{uuid.uuid4().hex[:8]}@mycorp.example"
    logged_in_page(page, web, admin, next="/admin/users")
    assert_accessible(page)
    if web.backend == "sqlite":
        screenshot(page, "admin-users")
    page.get_by_label("Email").fill(colleague)
    page.get_by_label("Name").fill("Col League")
    page.get_by_role("button", name="Send the invitation").click()
    expect(page.locator(f'tr[data-user="{colleague}"]')).to_contain_text("invited")
    link = link_in(mail_to(web, colleague), "/invite/")
    other = browser.new_context(base_url=web.base_url)
    try:
        theirs = other.new_page()
        theirs.goto(link)
        expect(theirs.get_by_text(f"as {colleague}")).to_be_visible()
        assert_accessible(theirs)
        theirs.get_by_label("New password").fill("colleague pass")
        theirs.get_by_label("The same again").fill("colleague pass")
        theirs.get_by_role("button", name="Set my password").click()
        expect(theirs.get_by_role("status")).to_contain_text("Your six dropbox addresses are live")
        expect(
            theirs.get_by_text(f"Signed in as {colleague} (member) · account {admin.account}")
        ).to_be_visible()
        their_note = theirs.get_by_test_id("dropbox-0").inner_text()
        theirs.goto(link)  # the invitation works once
        expect(theirs.get_by_role("alert")).to_have_text(
            "This link has expired or was already used."
        )
    finally:
        other.close()
    assert their_note != admin.dropbox["note"]
    msg = make_message(from_=colleague, to=["shared@client.example"], subject="From the colleague")
    assert smtp_send(web.crm.smtp, colleague, [their_note], msg) == {}
    data = web.crm.settled(admin.account)  # the same account's CRM: the admin sees the contact
    assert any("shared@client.example" in c["emails"] for c in data["contacts"])
    page.reload()
    expect(page.locator(f'tr[data-user="{colleague}"]')).to_contain_text("active")


def test_account_preferences_and_status_pages(page: Page, web: Web) -> None:
    admin = web.new_user()
    logged_in_page(page, web, admin, next="/settings/account")
    switch = page.get_by_label("File contact notes under their companies too")
    expect(switch).not_to_be_checked()
    assert_accessible(page)
    switch.check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.get_by_label("File contact notes under their companies too")).to_be_checked()
    page.goto("/admin/status")
    expect(page.get_by_role("heading", name="crmdrop is up")).to_be_visible()
    assert_accessible(page)


def test_password_reset_pages(page: Page, web: Web) -> None:
    user = web.new_user()
    page.goto("/login")
    page.get_by_role("link", name="Forgot your password?").click()
    assert_accessible(page)
    if web.backend == "sqlite":
        screenshot(page, "password-reset")
    page.get_by_label("Email").fill(user.email)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("status")).to_contain_text("a link to reset its password")
    page.goto(link_in(mail_to(web, user.email), "/password/reset/"))
    assert_accessible(page)
    page.get_by_label("New password").fill("a new password")
    page.get_by_label("The same again").fill("a new password")
    page.get_by_role("button", name="Change my password").click()
    expect(page.get_by_role("status")).to_have_text("Your password is changed. Sign in with it.")
    user.password = "a new password"
    logged_in_page(page, web, user, next=PAGE)
    wait_for(lambda: "/settings/dropbox" in page.url, what="the settings page")
