"""Cases, opportunities, threads, tasks, companies and automated senders end to end
(SPEC §1.4, §2.1, §5): SMTP to a running `crmdrop serve`, results read back through
`crmdrop export` and the record commands — on SQLite and on PostgreSQL (`crm` fixture)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import Result

from crmdrop.cli import app
from tests.conftest import Crm, Owner
from tests.support import make_message, smtp_send

# --- helpers -----------------------------------------------------------------------------


def send(crm: Crm, owner: Owner, msg: EmailMessage, kind: str = "note") -> None:
    """Send as the owner's client would, with `kind`'s dropbox as the envelope recipient."""
    smtp_send(crm.smtp, owner.email, [owner.dropbox[kind]], msg)


def note_for(data: dict[str, Any], msg: EmailMessage) -> dict[str, Any]:
    notes = [n for n in data["notes"] if n["message_id"] == msg["Message-ID"].strip("<>")]
    assert len(notes) == 1, notes
    return notes[0]


def plan_of(crm: Crm, data: dict[str, Any], msg: EmailMessage) -> dict[str, Any]:
    """The decision recorded for the (one) delivery of `msg`: the processing record."""
    ids = [d["id"] for d in data["deliveries"] if d["message_id"] == msg["Message-ID"].strip("<>")]
    assert len(ids) == 1, data["deliveries"]
    plan: dict[str, Any] = crm.cli.json("deliveries", "show", str(ids[0]))["plan"]
    return plan


def invoke(crm: Crm, *args: str) -> Result:
    """A command whose failure the test looks at (exit code and stderr)."""
    return crm.cli.runner.invoke(app, list(args), env=crm.cli.env)


def rules_of(plan: dict[str, Any]) -> dict[str, str]:
    return {a["address"]: a["rule"] for a in plan["addresses"]}


def add_company(crm: Crm, owner: Owner, name: str, domain: str, *emails: str) -> dict[str, Any]:
    args = ["companies", "add", name, "--account", owner.account, "--domain", domain]
    for e in emails:
        args += ["--email", e]
    company: dict[str, Any] = crm.cli.json(*args, "--json")
    return company


def contact_company(data: dict[str, Any], address: str) -> str | None:
    found = [c for c in data["contacts"] if address in c["emails"]]
    assert len(found) == 1, data["contacts"]
    company: str | None = found[0]["company"]
    return company


def local_day(zone: str, days: int) -> date:
    return datetime.now(UTC).astimezone(ZoneInfo(zone)).date() + timedelta(days=days)


def zone_off_utc_date(zones: tuple[str, ...], *, strict: bool) -> str:
    """The first zone whose calendar date differs from UTC's right now.

    With `strict` one must (FAR_ZONES guarantees it); else the first zone is the fallback.
    """
    today = datetime.now(UTC).date()
    zone = next((z for z in zones if local_day(z, 0) != today), None)
    assert zone is not None or not strict, f"every zone of {zones} is on UTC's date"
    return zone or zones[0]


# UTC+14 and UTC−11 (no DST): at every instant one of them is on another date than UTC.
FAR_ZONES = ("Pacific/Kiritimati", "Pacific/Pago_Pago")
# Zones with daylight saving, furthest from UTC first.
DST_ZONES = ("Pacific/Chatham", "Pacific/Auckland", "America/Adak", "America/Anchorage")


def task_across_the_date_line(
    crm: Crm, kind: str, zones: tuple[str, ...]
) -> tuple[dict[str, Any], str, Callable[[int], set[str]]]:
    """Send to `kind`'s dropbox as a user in a zone whose date differs from UTC's.

    Returns the task, the zone, and the local days (offset → ISO dates) that were current
    while it was processed: one date, or two if local midnight passed meanwhile.
    """
    zone = zone_off_utc_date(zones, strict=zones == FAR_ZONES)
    owner = crm.new_owner(timezone=zone)
    before = {d: local_day(zone, d) for d in (0, 1)}
    msg = make_message(
        from_=owner.email,
        to=["tess@client.example"],
        subject="Fwd: Call Tess back",
        body="About the renewal.\n",
    )
    send(crm, owner, msg, kind)
    data = crm.settled(owner.account)
    after = {d: local_day(zone, d) for d in (0, 1)}
    [task] = data["tasks"]
    [listed] = crm.cli.json("tasks", "list", "--account", owner.account, "--json")
    assert listed == {**task, "done": False}
    return task, zone, lambda d: {before[d].isoformat(), after[d].isoformat()}


# --- cases and opportunities (SPEC §5.1) -------------------------------------------------


def test_the_case_dropbox_creates_a_case_titled_from_the_subject_with_the_note_under_it(
    crm: Crm,
) -> None:
    owner = crm.new_owner()
    msg = make_message(
        from_=owner.email,
        to=['"Pat Printer" <pat@client.example>'],
        subject="Re: AW: Fwd: Printer on fire",
    )
    send(crm, owner, msg, "case")
    data = crm.settled(owner.account)
    assert data["cases"] == [
        {
            "ref": "CA1",
            "title": "Printer on fire",
            "status": "open",
            "contacts": ["pat@client.example"],
        }
    ]
    assert note_for(data, msg)["cases"] == ["CA1"]
    shown = crm.cli.json("cases", "show", "CA1", "--account", owner.account, "--json")
    assert shown["contacts"] == [{"name": "Pat Printer", "email": "pat@client.example"}]
    assert [(n["subject"], n["author_email"]) for n in shown["notes"]] == [
        ("Re: AW: Fwd: Printer on fire", owner.email)
    ]
    assert shown["notes"][0]["date"] is not None
    listed = crm.cli.json("cases", "list", "--account", owner.account, "--json")
    assert [(c["ref"], c["title"], c["notes"]) for c in listed] == [("CA1", "Printer on fire", 1)]


def test_a_ca_reference_from_any_dropbox_links_the_note_to_that_case(crm: Crm) -> None:
    owner = crm.new_owner()
    first = make_message(from_=owner.email, to=["pat@client.example"], subject="Printer broken")
    send(crm, owner, first, "case")
    crm.settled(owner.account)
    by_subject = make_message(
        from_=owner.email, to=["pat@client.example"], subject="Update [#ca1]", body="Fixed?\n"
    )
    by_body = make_message(
        from_=owner.email,
        to=["sam@client.example"],
        subject="Technician visit",
        body="Regarding #CA1: the technician comes Monday.\n",
    )
    send(crm, owner, by_subject, "note")
    send(crm, owner, by_body, "case")
    data = crm.settled(owner.account, count=3)
    assert [c["ref"] for c in data["cases"]] == ["CA1"]
    assert note_for(data, by_subject)["cases"] == ["CA1"]
    assert note_for(data, by_body)["cases"] == ["CA1"]
    assert data["cases"][0]["contacts"] == ["pat@client.example", "sam@client.example"]
    shown = crm.cli.json("cases", "show", "1", "--account", owner.account, "--json")
    assert [n["subject"] for n in shown["notes"]] == [
        "Printer broken",
        "Update [#ca1]",
        "Technician visit",
    ]


def test_the_opp_dropbox_creates_an_opportunity_titled_from_the_subject(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(
        from_=owner.email, to=["buyer@bigco.example"], subject="TR: RE: 500 seats for BigCo"
    )
    send(crm, owner, msg, "opp")
    data = crm.settled(owner.account)
    assert data["opportunities"] == [
        {
            "ref": "CO1",
            "title": "500 seats for BigCo",
            "status": "open",
            "contacts": ["buyer@bigco.example"],
        }
    ]
    assert note_for(data, msg)["opportunities"] == ["CO1"]
    assert data["cases"] == []
    shown = crm.cli.json("opportunities", "show", "CO1", "--account", owner.account, "--json")
    assert [n["subject"] for n in shown["notes"]] == ["TR: RE: 500 seats for BigCo"]


def test_a_co_reference_links_the_note_to_that_opportunity_instead_of_creating_one(
    crm: Crm,
) -> None:
    owner = crm.new_owner()
    first = make_message(from_=owner.email, to=["buyer@bigco.example"], subject="500 seats")
    send(crm, owner, first, "opp")
    crm.settled(owner.account)
    update = make_message(
        from_=owner.email, to=["cfo@bigco.example"], subject="Signed contract #Co1"
    )
    send(crm, owner, update, "opp")
    data = crm.settled(owner.account, count=2)
    assert [o["ref"] for o in data["opportunities"]] == ["CO1"]
    assert note_for(data, update)["opportunities"] == ["CO1"]
    assert data["opportunities"][0]["contacts"] == ["buyer@bigco.example", "cfo@bigco.example"]
    listed = crm.cli.json("opportunities", "list", "--account", owner.account, "--json")
    assert [(o["ref"], o["notes"]) for o in listed] == [("CO1", 2)]


def test_reference_numbers_are_counted_per_account(crm: Crm) -> None:
    alice, bob = crm.new_owner(), crm.new_owner()
    for owner in (alice, bob):
        for kind in ("case", "case", "opp"):
            send(crm, owner, make_message(from_=owner.email, to=["c@client.example"]), kind)
    for owner in (alice, bob):
        data = crm.settled(owner.account, count=3)
        assert [c["ref"] for c in data["cases"]] == ["CA1", "CA2"]
        assert [o["ref"] for o in data["opportunities"]] == ["CO1"]


def test_a_reference_to_another_accounts_case_is_ignored_and_recorded(crm: Crm) -> None:
    other, owner = crm.new_owner(), crm.new_owner()
    theirs = make_message(from_=other.email, to=["x@theirs.example"], subject="Their case")
    send(crm, other, theirs, "case")
    crm.settled(other.account)
    msg = make_message(
        from_=owner.email, to=["y@ours.example"], subject="About #CA1", body="See #CO1 too.\n"
    )
    send(crm, owner, msg, "note")
    data = crm.settled(owner.account)
    note = note_for(data, msg)
    assert note["cases"] == [] and note["opportunities"] == []
    assert data["cases"] == []
    assert (
        "reference #CA1 matches no case of this account: ignored"  # nor says it exists
        in plan_of(crm, data, msg)["notices"]
    )
    shown = crm.cli.json("cases", "show", "CA1", "--account", other.account, "--json")
    assert [n["subject"] for n in shown["notes"]] == ["Their case"]


@pytest.mark.parametrize(
    ("kind", "prefix", "label"), [("case", "CA", "case"), ("opp", "CO", "opportunity")]
)
def test_an_unknown_reference_on_the_record_dropbox_creates_a_new_one_and_says_so(
    crm: Crm, kind: str, prefix: str, label: str
) -> None:
    owner = crm.new_owner()
    msg = make_message(
        from_=owner.email, to=["z@client.example"], subject=f"Follow-up on #{prefix}77"
    )
    send(crm, owner, msg, kind)
    data = crm.settled(owner.account)
    records = data["cases"] if kind == "case" else data["opportunities"]
    assert [(r["ref"], r["title"]) for r in records] == [
        (f"{prefix}1", f"Follow-up on #{prefix}77")
    ]
    plan = plan_of(crm, data, msg)
    assert plan["notices"] == [
        f"reference #{prefix}77 matches no {label} of this account: created a new {label}"
    ]
    assert plan["records"][0]["action"] == "create"
    assert f"unknown reference #{prefix}77" in plan["records"][0]["why"]


def test_cases_show_refuses_an_unknown_reference_with_exit_code_1(crm: Crm) -> None:
    owner = crm.new_owner()
    result = invoke(crm, "cases", "show", "CA9", "--account", owner.account)
    assert result.exit_code == 1
    assert result.stderr == f"crmdrop: no case CA9 in account {owner.account!r}\n"
    wrong_kind = invoke(crm, "cases", "show", "CO1", "--account", owner.account)
    assert wrong_kind.exit_code == 1
    assert "is not a case reference" in wrong_kind.stderr
    no_account = invoke(crm, "cases", "list", "--account", "no-such-account")
    assert no_account.exit_code == 1
    assert no_account.stderr == "crmdrop: no account named 'no-such-account'\n"


# --- threads (SPEC §5.2) -----------------------------------------------------------------


def test_a_reply_joins_the_cases_and_contacts_of_its_thread(crm: Crm) -> None:
    owner = crm.new_owner()
    first = make_message(from_=owner.email, to=["pat@client.example"], subject="Printer broken")
    send(crm, owner, first, "case")
    crm.settled(owner.account)
    reply = make_message(
        from_=owner.email,
        to=["tech@repairs.example"],
        subject="Re: Printer broken",
        headers={"In-Reply-To": first["Message-ID"], "References": first["Message-ID"]},
    )
    send(crm, owner, reply, "note")
    data = crm.settled(owner.account, count=2)
    note = note_for(data, reply)
    assert note["cases"] == ["CA1"]
    assert note["contacts"] == ["pat@client.example", "tech@repairs.example"]
    assert [c["ref"] for c in data["cases"]] == ["CA1"]
    assert data["cases"][0]["contacts"] == ["pat@client.example", "tech@repairs.example"]


# --- tasks (SPEC §5.3) -------------------------------------------------------------------


def test_the_task_dropbox_makes_a_task_with_no_deadline_owned_by_the_user(crm: Crm) -> None:
    task, zone, _ = task_across_the_date_line(crm, "task", FAR_ZONES)
    assert task["due"] is None and task["due_kind"] == "none"
    assert task["timezone"] == zone
    assert task["title"] == "Call Tess back"
    assert task["description"] == "About the renewal."
    assert task["contacts"] == ["tess@client.example"]
    assert task["owner"].startswith("owner-")


def test_the_today_dropbox_makes_a_task_due_on_the_users_local_today(crm: Crm) -> None:
    task, zone, days = task_across_the_date_line(crm, "today", FAR_ZONES)
    assert task["due"] in days(0)
    assert task["due_kind"] == "today" and task["timezone"] == zone
    assert task["contacts"] == ["tess@client.example"]


def test_the_tomorrow_dropbox_makes_a_task_due_on_the_users_local_tomorrow(crm: Crm) -> None:
    task, zone, days = task_across_the_date_line(crm, "tomorrow", FAR_ZONES)
    assert task["due"] in days(1)
    assert task["due_kind"] == "tomorrow" and task["timezone"] == zone


def test_a_user_in_a_daylight_saving_zone_gets_the_local_calendar_day(crm: Crm) -> None:
    task, zone, days = task_across_the_date_line(crm, "tomorrow", DST_ZONES)
    offsets = {datetime(2026, m, 1, tzinfo=ZoneInfo(zone)).utcoffset() for m in (1, 7)}
    assert len(offsets) == 2, f"{zone} should observe daylight saving time"
    assert task["due"] in days(1)
    assert task["timezone"] == zone


def test_a_task_needs_no_contact(crm: Crm) -> None:
    owner = crm.new_owner(timezone="Europe/Berlin")
    msg = make_message(
        from_=owner.email, to=[owner.email], subject="Renew passport", body="Before May.\n"
    )
    send(crm, owner, msg, "today")
    data = crm.settled(owner.account)
    assert [(t["title"], t["contacts"]) for t in data["tasks"]] == [("Renew passport", [])]
    assert data["deliveries"][0]["status"] == "task_only"
    assert data["notes"] == [] and data["replies"] == []
    mine = crm.cli.json(
        "tasks", "list", "--account", owner.account, "--user", owner.email, "--json"
    )
    assert [t["title"] for t in mine] == ["Renew passport"]


# --- companies (SPEC §1.4, §5.4) ---------------------------------------------------------


def test_with_file_under_companies_on_a_note_is_filed_under_the_contacts_company_too(
    crm: Crm,
) -> None:
    owner = crm.new_owner()
    add_company(crm, owner, "Acme", "acme-corp.example")
    crm.cli.run("preferences", "set", owner.account, "file-under-companies", "on")
    msg = make_message(from_=owner.email, to=["jane@acme-corp.example"])
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert data["preferences"]["file_under_companies"] is True
    note = note_for(data, msg)
    assert note["contacts"] == ["jane@acme-corp.example"]
    assert note["companies"] == ["Acme"]


def test_with_file_under_companies_off_a_note_is_filed_under_the_contact_only(crm: Crm) -> None:
    owner = crm.new_owner()
    add_company(crm, owner, "Acme", "acme-corp.example")
    crm.cli.run("preferences", "set", owner.account, "file-under-companies", "on")
    crm.cli.run("preferences", "set", owner.account, "file-under-companies", "off")
    shown = crm.cli.json("preferences", "show", owner.account, "--json")
    assert shown["file-under-companies"] is False
    msg = make_message(from_=owner.email, to=["jane@acme-corp.example"])
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    note = note_for(data, msg)
    assert note["contacts"] == ["jane@acme-corp.example"]
    assert note["companies"] == []
    assert contact_company(data, "jane@acme-corp.example") == "Acme"


def test_a_companys_own_address_files_the_note_under_the_company(crm: Crm) -> None:
    owner = crm.new_owner()
    add_company(crm, owner, "Acme", "acme-corp.example", "Sales@Acme-Corp.example")
    msg = make_message(from_=owner.email, to=["sales@acme-corp.example"], subject="Quote")
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    note = note_for(data, msg)
    assert note["companies"] == ["Acme"]
    assert note["contacts"] == [] and data["contacts"] == []


def test_a_new_contact_at_a_companys_domain_is_linked_to_it(crm: Crm) -> None:
    owner = crm.new_owner()
    add_company(crm, owner, "Acme", "ACME-corp.example")
    msg = make_message(from_=owner.email, to=["bob@acme-corp.example", "carol@other.example"])
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert contact_company(data, "bob@acme-corp.example") == "Acme"
    assert contact_company(data, "carol@other.example") is None
    [acme] = crm.cli.json("companies", "list", "--account", owner.account, "--json")
    assert (acme["domain"], acme["contacts"]) == ("acme-corp.example", ["bob@acme-corp.example"])


def test_free_mail_domains_never_make_or_match_a_company(crm: Crm) -> None:
    owner = crm.new_owner()
    refused = invoke(
        crm, "companies", "add", "Gmail Fans", "--account", owner.account, "--domain", "gmail.com"
    )
    assert refused.exit_code == 1
    assert "gmail.com is a free-mail domain" in refused.stderr
    add_company(crm, owner, "Acme", "acme-corp.example", "acme.sales@gmail.com")
    msg = make_message(from_=owner.email, to=["pat@gmail.com", "kim@yahoo.co.uk"])
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert [c["name"] for c in data["companies"]] == ["Acme"]
    assert contact_company(data, "pat@gmail.com") is None
    assert contact_company(data, "kim@yahoo.co.uk") is None


# --- automated senders -------------------------------------------------------------------


def test_automated_senders_are_discarded_by_their_own_rule(crm: Crm) -> None:
    owner = crm.new_owner()
    machines = [
        "no-reply@shop.example",
        "noreply@shop.example",
        "notifications@github.example",
        "bounce-42@lists.example",
    ]
    msg = make_message(from_=owner.email, to=["jane@client.example"], cc=machines)
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert note_for(data, msg)["contacts"] == ["jane@client.example"]
    rules = rules_of(plan_of(crm, data, msg))
    assert {a: rules[a] for a in machines} == dict.fromkeys(machines, "automated")
    assert rules["jane@client.example"] == "contact"


def test_the_author_of_mailing_list_mail_is_discarded_as_automated(crm: Crm) -> None:
    owner = crm.new_owner()
    newsletter = EmailMessage(policy=SMTP_POLICY)
    newsletter["From"] = "Weekly Digest <digest@letters.example>"
    newsletter["To"] = owner.email
    newsletter["Subject"] = "This week"
    newsletter["List-Id"] = "Weekly <weekly.letters.example>"
    newsletter.set_content("News.\n")
    msg = make_message(from_=owner.email, to=["jane@client.example"], subject="Seen this?")
    msg.add_attachment(newsletter)
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    plan = plan_of(crm, data, msg)
    [digest] = [a for a in plan["addresses"] if a["address"] == "digest@letters.example"]
    assert digest["rule"] == "automated"
    assert "List-Id" in digest["detail"]
    assert [c["emails"] for c in data["contacts"]] == [["jane@client.example"]]


def test_with_discard_automated_off_an_automated_sender_becomes_a_contact(crm: Crm) -> None:
    owner = crm.new_owner()
    crm.cli.run("preferences", "set", owner.account, "discard-automated", "off")
    msg = make_message(from_=owner.email, to=["no-reply@shop.example"])
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert data["preferences"]["discard_automated"] is False
    assert note_for(data, msg)["contacts"] == ["no-reply@shop.example"]
    assert rules_of(plan_of(crm, data, msg))["no-reply@shop.example"] == "contact"
