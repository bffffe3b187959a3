"""The REST API over real HTTP (httpx) against a running `crmdrop serve`, on SQLite and
PostgreSQL: mail sent over SMTP is read, changed and undone through /api/v1."""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Crm, Owner, own_server
from tests.support import make_message, smtp_send, wait_for

PROBLEM = "application/problem+json"


@dataclass
class Api:
    """A token's view of the API."""

    owner: Owner
    client: httpx.Client

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        response = self.client.request(method, path, **kw)
        assert response.status_code == status, (path, response.status_code, response.text)
        return response.json() if response.content else None


def base_url(crm: Crm) -> str:
    return f"http://127.0.0.1:{crm.server.http_port}/api/v1"


def token_for(crm: Crm, email: str) -> str:
    made: dict[str, Any] = crm.cli.json("tokens", "create", email, "--name", "tests", "--json")
    return str(made["token"])


@pytest.fixture
def api(crm: Crm) -> Iterator[Api]:
    owner = crm.new_owner()
    headers = {"Authorization": f"Bearer {token_for(crm, owner.email)}"}
    with httpx.Client(base_url=base_url(crm), headers=headers, timeout=30) as client:
        yield Api(owner, client)


def assert_problem(response: httpx.Response, status: int, says: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and says in body["detail"], body


def file_one(crm: Crm, owner: Owner, kind: str = "case", **kw: Any) -> dict[str, Any]:
    msg = make_message(from_=owner.email, **kw)
    smtp_send(crm.smtp, owner.email, [owner.dropbox[kind]], msg)
    data: dict[str, Any] = crm.settled(owner.account)
    return data


def test_without_a_valid_token_the_api_answers_401_problem_json(crm: Crm, api: Api) -> None:
    with httpx.Client(base_url=base_url(crm), timeout=30) as anonymous:
        for path in ("/me", "/contacts", "/deliveries", "/webhooks"):
            response = anonymous.get(path)
            assert_problem(response, 401, "Authorization: Bearer")
            assert response.headers["www-authenticate"].startswith("Bearer")
        bad = anonymous.get("/me", headers={"Authorization": "Bearer crd_nonsense"})
        assert_problem(bad, 401, "not valid")
    made = crm.cli.json("tokens", "create", api.owner.email, "--name", "soon revoked", "--json")
    with httpx.Client(
        base_url=base_url(crm), headers={"Authorization": f"Bearer {made['token']}"}, timeout=30
    ) as client:
        assert client.get("/me").status_code == 200
        crm.cli.run("tokens", "revoke", str(made["id"]))
        assert_problem(client.get("/me"), 401, "not valid")


def test_me_shows_the_six_addresses_and_regenerate_kills_the_old_ones(crm: Crm, api: Api) -> None:
    me = api.ok("GET", "/me")
    assert me["email"] == api.owner.email and me["role"] == "admin"
    assert me["dropbox"] == api.owner.dropbox
    fresh = api.ok("POST", "/me/dropbox/regenerate")
    assert set(fresh["dropbox"]) == set(me["dropbox"])
    assert fresh["dropbox"]["note"] != me["dropbox"]["note"]
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp_send(crm.smtp, api.owner.email, [me["dropbox"]["note"]], b"Subject: x\r\n\r\nx\r\n")
    assert api.ok("GET", "/me")["dropbox"] == fresh["dropbox"]


def test_a_filed_message_is_read_through_the_api(crm: Crm, api: Api) -> None:
    owner = api.owner
    data = file_one(
        crm,
        owner,
        to=["Ann Lee <ann@client.example>"],
        subject="Contract draft",
        attachments=[("draft.pdf", b"%PDF-1.4 test")],
    )
    contacts = api.ok("GET", "/contacts", params={"q": "ann@client"})["items"]
    assert [c["email"] for c in contacts] == ["ann@client.example"]
    contact = api.ok("GET", f"/contacts/{contacts[0]['id']}")
    assert contact["name"] == "Ann Lee"
    notes = api.ok("GET", "/notes", params={"contact": contact["id"]})["items"]
    assert [n["subject"] for n in notes] == ["Contract draft"]
    note = api.ok("GET", f"/notes/{notes[0]['id']}")
    assert note["id"] == data["notes"][0]["id"]
    raw = api.get(f"/notes/{note['id']}/raw")
    assert raw.status_code == 200 and b"Subject: Contract draft" in raw.content
    attachment = note["attachments"][0]
    assert attachment["filename"] == "draft.pdf"
    assert api.get(f"/attachments/{attachment['id']}").content == b"%PDF-1.4 test"
    case = api.ok("GET", "/cases")["items"][0]
    assert case["ref"] == data["cases"][0]["ref"] and case["notes"] == 1
    by_case = api.ok("GET", "/notes", params={"case": case["number"]})["items"]
    assert [n["id"] for n in by_case] == [note["id"]]
    changed = api.ok("PATCH", f"/cases/{case['number']}", json={"status": "closed"})
    assert changed["status"] == "closed" and changed["title"] == "Contract draft"
    assert api.ok("GET", "/cases", params={"status": "open"})["items"] == []


def test_deliveries_are_listed_undone_and_retried(crm: Crm, api: Api) -> None:
    file_one(crm, api.owner, kind="task", to=["bo@client.example"], subject="Call Bo")
    rows = api.ok("GET", "/deliveries")["items"]
    assert [r["status"] for r in rows] == ["filed"]
    delivery = api.ok("GET", f"/deliveries/{rows[0]['id']}")
    assert delivery["can_undo"] and "dropbox-" not in delivery["rcpt_to"].split("@")[0][8:]
    tasks = api.ok("GET", "/tasks")["items"]
    assert [t["task"]["title"] for t in tasks] == ["Call Bo"]
    task_id = tasks[0]["task"]["id"]
    assert api.ok("PATCH", f"/tasks/{task_id}", json={"done": True})["done"] is True
    assert api.ok("GET", f"/tasks/{task_id}")["done"] is True
    undone = api.ok("POST", f"/deliveries/{delivery['id']}/undo")
    assert any("task" in r for r in undone["removed"])
    assert api.get(f"/tasks/{task_id}").status_code == 404
    assert_problem(api.client.post(f"/deliveries/{delivery['id']}/undo"), 422, "undone")
    assert api.ok("POST", f"/deliveries/{delivery['id']}/retry", status=202)["status"] == "queued"
    wait_for(lambda: api.ok("GET", "/tasks")["items"], what="the task filed again")


def test_contacts_are_created_changed_merged_and_deleted(api: Api) -> None:
    one = api.ok("POST", "/contacts", 201, json={"name": "Cy", "emails": ["cy@a.example"]})
    two = api.ok("POST", "/contacts", 201, json={"name": "Cy B", "emails": ["cy@b.example"]})
    renamed = api.ok("PATCH", f"/contacts/{one['id']}", json={"name": "Cy Ames"})
    assert renamed["name"] == "Cy Ames" and renamed["email"] == "cy@a.example"
    merged = api.ok("POST", f"/contacts/{one['id']}/merge", json={"other_id": two["id"]})
    assert merged["id"] == one["id"]
    assert api.ok("GET", f"/contacts/{one['id']}")["emails"] == ["cy@a.example", "cy@b.example"]
    assert api.get(f"/contacts/{two['id']}").status_code == 404
    company = api.ok("POST", "/companies", 201, json={"name": "Ames", "domain": "ames.example"})
    api.ok("PATCH", f"/contacts/{one['id']}", json={"company_id": company["id"]})
    assert api.ok("GET", f"/companies/{company['id']}")["people"][0]["id"] == one["id"]
    api.ok("DELETE", f"/contacts/{one['id']}", 204)
    assert api.ok("GET", "/contacts")["items"] == []


def test_another_accounts_ids_are_not_found_and_stay_untouched(crm: Crm, api: Api) -> None:
    theirs = crm.new_owner()
    data = file_one(crm, theirs, kind="today", to=["eve@client.example"], subject="Private")
    contact_id = data["contacts"][0]["id"]
    note_id, delivery_id = data["notes"][0]["id"], data["deliveries"][0]["id"]
    hook = crm.cli.json(
        "webhooks",
        "add",
        theirs.account,
        "http://127.0.0.1:9/x",
        "--events",
        "note.filed",
        "--json",
    )
    for path in (
        f"/contacts/{contact_id}",
        f"/notes/{note_id}",
        f"/notes/{note_id}/raw",
        f"/deliveries/{delivery_id}",
        f"/deliveries/{delivery_id}/raw",
        f"/webhooks/{hook['id']}",
        "/cases/1",
    ):
        assert_problem(api.get(path), 404, "no ")
    assert_problem(api.client.delete(f"/contacts/{contact_id}"), 404, "no contact")
    assert_problem(api.client.post(f"/deliveries/{delivery_id}/undo"), 404, "no delivery")
    assert_problem(api.client.delete(f"/webhooks/{hook['id']}"), 404, "no webhook")
    mine = api.ok("POST", "/contacts", 201, json={"name": "Mine", "emails": ["m@e.example"]})
    assert_problem(
        api.client.post(f"/contacts/{mine['id']}/merge", json={"other_id": contact_id}),
        404,
        "no contact",
    )
    after = crm.export(theirs.account)
    assert [c["id"] for c in after["contacts"]] == [contact_id]
    assert [n["id"] for n in after["notes"]] == [note_id]
    assert len(crm.cli.json("webhooks", "list", theirs.account, "--json")) == 1


def test_bad_input_is_a_422_problem_and_changes_nothing(api: Api) -> None:
    client = api.client
    bad_json = client.post(
        "/contacts", content=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    assert_problem(bad_json, 422, "not valid JSON")
    missing = client.post("/contacts", json={"emails": ["a@b.example"]})
    assert_problem(missing, 422, "body.name: Field required")
    assert missing.json()["errors"][0]["loc"] == ["body", "name"]
    assert_problem(
        client.post("/contacts", json={"name": "X", "emails": ["not an address"]}),
        422,
        "is not a valid email address",
    )
    unknown = client.post("/webhooks", json={"url": "https://h.example/", "events": ["nope"]})
    assert_problem(unknown, 422, "unknown event 'nope'")
    assert_problem(client.get("/contacts", params={"cursor": "garbage"}), 422, "not valid")
    assert_problem(client.get("/contacts/0"), 422, "greater than or equal to 1")
    huge = client.post("/contacts", json={"name": "x" * 30_000})
    assert_problem(huge, 413, "over 20000 bytes")
    assert api.ok("GET", "/contacts")["items"] == []
    assert api.ok("GET", "/webhooks")["items"] == []


def test_pages_follow_the_cursor_without_overlap(api: Api) -> None:
    for i in range(55):
        api.ok("POST", "/contacts", 201, json={"name": f"P{i}", "emails": [f"p{i}@pg.example"]})
    first = api.ok("GET", "/contacts")
    assert len(first["items"]) == 50 and first["next_cursor"]
    second = api.ok("GET", "/contacts", params={"cursor": first["next_cursor"]})
    assert len(second["items"]) == 5 and second["next_cursor"] is None
    seen = [c["id"] for c in first["items"] + second["items"]]
    assert len(set(seen)) == 55


def test_webhooks_are_registered_listed_and_removed_through_the_api(api: Api) -> None:
    made = api.ok(
        "POST",
        "/webhooks",
        201,
        json={"url": "https://hooks.example/in", "events": ["task.created"]},
    )
    assert made["secret"].startswith("whsec_") and made["enabled"]
    listed = api.ok("GET", "/webhooks")["items"]
    assert [w["id"] for w in listed] == [made["id"]] and "secret" not in listed[0]
    assert api.ok("GET", f"/webhooks/{made['id']}")["last_attempts"] == []
    api.ok("DELETE", f"/webhooks/{made['id']}", 204)
    assert api.ok("GET", "/webhooks")["items"] == []


def test_the_openapi_document_and_docs_page_are_served(crm: Crm) -> None:
    with httpx.Client(base_url=base_url(crm), timeout=30) as client:
        spec = client.get("/openapi.json").json()
        page = client.get("/docs")
    assert spec["openapi"].startswith("3.")
    for path in ("/me", "/contacts/{contact_id}/merge", "/deliveries/{delivery_id}/undo"):
        assert path in spec["paths"]
    assert page.status_code == 200 and "/api/v1/contacts" in page.text


def test_a_token_over_its_rate_limit_gets_429_with_retry_after(tmp_path: Any) -> None:
    env = {"CRMDROP_DOMAIN": "dropbox.test", "CRMDROP_API_RATE_LIMIT": "3/minute"}
    for own in own_server("sqlite", tmp_path, env, worker=False):  # no mail is filed
        email = f"rl-{uuid.uuid4().hex[:6]}@corp.example"
        own.cli.json("users", "add", email, "--name", "R", "--account", "rl", "--json")
        token = own.cli.json("tokens", "create", email, "--name", "t", "--json")["token"]
        other = own.cli.json("tokens", "create", email, "--name", "u", "--json")["token"]
        url = f"http://127.0.0.1:{own.server.http_port}/api/v1/me"
        with httpx.Client(timeout=30) as client:
            codes = [
                client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code
                for _ in range(3)
            ]
            limited = client.get(url, headers={"Authorization": f"Bearer {token}"})
            fresh = client.get(url, headers={"Authorization": f"Bearer {other}"})
        assert codes == [200, 200, 200]
        assert_problem(limited, 429, "rate limit")
        assert 0 < int(limited.headers["retry-after"]) <= 60
        assert fresh.status_code == 200  # the limit is per token
