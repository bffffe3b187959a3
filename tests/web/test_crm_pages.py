"""The CRM pages in a real browser (Playwright + Debian's Chromium) against `crmdrop serve`,
on SQLite and PostgreSQL: real emails over SMTP (BCC, a forward, a case and a `#CA`
reference, a task) seen on the contact, case and task pages; a task completed; two
contacts merged; a filing undone and retried; axe on every page; the screenshots."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support import make_message, smtp_send
from tests.web.conftest import Web, WebUser, assert_accessible, logged_in_page, screenshot
from tests.web.crm_client import tag

FORWARD = """Have a look at this quote.

---------- Forwarded message ---------
From: Bob Stone <bob-{t}@vendor.example>
Date: Mon, 5 Jan 2026 at 10:00
Subject: Quote for pumps
To: Me <{me}>

Here is our quote for the pumps.
"""


def _send(web: Web, user: WebUser, box: str, **kwargs: object) -> None:
    """An email from the user, with the dropbox only on the envelope (a BCC)."""
    msg = make_message(from_=user.email, **kwargs)  # type: ignore[arg-type]
    smtp_send(web.crm.smtp, user.email, [user.dropbox[box]], msg)


def _mail(web: Web, user: WebUser, t: str) -> None:
    jane = f'"Jane Doe" <jane-{t}@client.example>'
    _send(web, user, "note", to=[jane], subject="Offer for pumps", body="Dear Jane,\nthe offer.\n")
    _send(
        web,
        user,
        "note",
        to=[user.email],
        subject="Fwd: Quote for pumps",
        body=FORWARD.format(t=t, me=user.email),
    )
    _send(web, user, "case", to=[jane], subject="Broken pump")
    web.crm.settled(user.account, 3)  # CA1 exists before an email names it
    _send(web, user, "note", to=[jane], subject="Re: Broken pump #CA1 parts ordered")
    _send(web, user, "today", to=[jane], subject="Call Jane about the pump")
    web.crm.settled(user.account, 5)


def test_mail_shows_on_the_contact_case_and_task_pages(page: Page, web: Web) -> None:
    user, t = web.new_user(), tag()
    _mail(web, user, t)
    logged_in_page(page, web, user)
    expect(page).to_have_url(web.url("/contacts"))
    expect(page.get_by_role("link", name="Jane Doe")).to_be_visible()
    expect(page.get_by_role("link", name="Bob Stone")).to_be_visible()
    assert_accessible(page)
    if web.backend == "sqlite":
        screenshot(page, "contacts")
    page.get_by_label("Search by name, email or company").fill("bob")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name="Jane Doe")).to_have_count(0)
    page.get_by_role("link", name="Bob Stone").click()
    expect(page.get_by_role("heading", name="Quote for pumps")).to_be_visible()
    expect(page.get_by_text("Here is our quote for the pumps.")).to_be_visible()

    page.goto("/contacts")
    page.get_by_role("link", name="Jane Doe").click()
    for subject in ("Offer for pumps", "Broken pump", "Re: Broken pump #CA1 parts ordered"):
        expect(page.get_by_role("heading", name=subject, exact=True)).to_be_visible()
    expect(page.get_by_text("Sent").first).to_be_visible()
    assert_accessible(page)
    if web.backend == "sqlite":
        screenshot(page, "contact")

    page.get_by_role("link", name="#CA1").first.click()
    expect(page.get_by_role("heading", name="#CA1 Broken pump")).to_be_visible()
    expect(page.get_by_role("heading", name="Re: Broken pump #CA1 parts ordered")).to_be_visible()
    assert_accessible(page)
    page.get_by_text("Edit").click()
    page.get_by_label("Status").select_option("closed")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved CA1 (closed).")).to_be_visible()

    page.goto("/tasks")
    today = page.locator("section", has=page.get_by_role("heading", name=re.compile("^Today")))
    expect(today.get_by_role("heading", name="Call Jane about the pump")).to_be_visible()
    assert_accessible(page)
    today.get_by_role("button", name="Complete").click()
    done = page.locator("section", has=page.get_by_role("heading", name=re.compile("^Done")))
    expect(done.get_by_role("heading", name="Call Jane about the pump")).to_be_visible()
    done.get_by_role("button", name="Reopen").click()
    expect(today.get_by_role("heading", name="Call Jane about the pump")).to_be_visible()

    for path in ("/companies", "/cases", "/opportunities"):
        page.goto(path)
        assert_accessible(page)
    web.crm.cli.run("companies", "add", "Pump Buyers Ltd", "--account", user.account)
    page.goto("/companies")
    page.get_by_role("link", name="Pump Buyers Ltd").click()
    expect(page.get_by_role("heading", name="Pump Buyers Ltd").first).to_be_visible()
    assert_accessible(page)


def test_two_contacts_are_merged(page: Page, web: Web) -> None:
    user, t = web.new_user(), tag()
    _send(web, user, "note", to=[f'"Jane Doe" <jane-{t}@client.example>'], subject="Work")
    _send(web, user, "note", to=[f'"Jane D" <jane.home-{t}@home.example>'], subject="Dinner")
    web.crm.settled(user.account, 2)
    logged_in_page(page, web, user)
    page.get_by_role("link", name="Jane Doe").click()
    page.get_by_text("Merge", exact=True).click()
    page.get_by_label("Merge in the contact with this email address").fill(
        f"jane-{t}@client.example"
    )
    page.get_by_role("button", name="Merge into Jane Doe").click()
    expect(page.get_by_role("alert")).to_contain_text("cannot be merged with itself")
    page.get_by_text("Merge", exact=True).click()
    page.get_by_label("Merge in the contact with this email address").fill(
        f"jane.home-{t}@home.example"
    )
    page.get_by_role("button", name="Merge into Jane Doe").click()
    expect(page.get_by_text("every note and address is kept")).to_be_visible()
    expect(page.get_by_text(f"jane.home-{t}@home.example", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Dinner")).to_be_visible()
    expect(page.get_by_role("heading", name="Work")).to_be_visible()
    page.goto("/contacts")
    expect(page.get_by_role("link", name="Jane D", exact=True)).to_have_count(0)


def test_a_filing_is_undone_and_retried(page: Page, web: Web) -> None:
    user, t = web.new_user(), tag()
    _send(web, user, "case", to=[f'"Ann Lee" <ann-{t}@client.example>'], subject="Leak")
    web.crm.settled(user.account, 1)
    logged_in_page(page, web, user)
    page.goto("/activity")
    expect(page.get_by_role("cell", name="Leak", exact=True)).to_be_visible()
    assert_accessible(page)
    if web.backend == "sqlite":
        screenshot(page, "activity")
    page.get_by_role("row", name=re.compile("Leak")).get_by_role("link").click()
    expect(page.get_by_text(f"ann-{t}@client.example").first).to_be_visible()
    expect(page.get_by_text("Created case CA1")).to_be_visible()
    assert_accessible(page)
    if web.backend == "sqlite":
        screenshot(page, "delivery")
    page.get_by_role("button", name="Undo this filing").click()
    expect(page.get_by_role("status")).to_contain_text("Filing undone")
    expect(page.get_by_text("undone", exact=True).first).to_be_visible()
    assert web.crm.export(user.account)["contacts"] == []
    page.goto("/cases")
    expect(page.get_by_text("No cases")).to_be_visible()
    page.go_back()
    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_contain_text("Queued again")
    web.crm.settled(user.account, 1)
    page.reload()
    expect(page.locator(".status").first).to_have_text("filed")
    expect(page.get_by_text("retry — queued again")).to_be_visible()
    page.goto("/contacts")
    expect(page.get_by_role("link", name="Ann Lee")).to_be_visible()
