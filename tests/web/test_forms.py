"""Every form of the settings and admin pages, without a browser (httpx against the running
server, SQLite and PostgreSQL): bad input gets a clear message and changes nothing, a form
without its CSRF token is refused, sign-in is throttled, another account's objects are 404."""

from __future__ import annotations

import re
import smtplib
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from crmdrop.store.db import Database
from crmdrop.store.models import TokenKind, User, UserToken
from tests.support import make_message, smtp_send
from tests.web.conftest import Web, WebClient, WebUser, flashes, link_in, mail_to

PAGE = "/settings/dropbox"


def fresh_ip() -> str:
    """An address of TEST-NET-3 of this test's own (trusted X-Forwarded-For from loopback)."""
    n = uuid.uuid4().int
    return f"203.0.{n % 250}.{(n >> 8) % 250 + 1}"


def signed_in(web: Web, user: WebUser) -> WebClient:
    client = WebClient(web, ip=fresh_ip())
    response = client.login(user)
    assert response.status_code == 200 and "/login" not in str(response.url)
    return client


def page_state(client: WebClient, path: str = PAGE) -> str:
    """The page without its flash messages: equal before and after means nothing changed."""
    text = client.get(path).text
    return re.sub(r'<p class="flash[^>]*>[^<]*</p>', "", text)


BAD_SETTINGS = [
    ("/exclusions", {"pattern": "@not a domain"}, "'@not a domain' is not a domain."),
    ("/exclusions", {"pattern": "nobody-at-all"}, "'nobody-at-all' is not a valid email address."),
    ("/addresses", {"address": "not-an-address"}, "'not-an-address' is not a valid email address."),
    ("/addresses/remove", {"address": "gone@x.example"}, "is not one of your additional"),
    ("/addresses/validate", {"address": "gone@x.example"}, "is not one of your additional"),
    ("/exclusions/remove", {"pattern": "@gone.example"}, "is not on the exclusion list"),
    ("/timezone", {"timezone": "Mars/Olympus_Mons"}, "unknown time zone 'Mars/Olympus_Mons'."),
    ("/regenerate", {}, "Nothing changed: tick the box to confirm."),
]


@pytest.mark.parametrize(("path", "form", "message"), BAD_SETTINGS)
def test_bad_settings_input_is_explained_and_changes_nothing(
    web: Web, path: str, form: dict[str, str], message: str
) -> None:
    admin = web.new_user()
    client = signed_in(web, admin)
    before = page_state(client)
    response = client.post(PAGE + path, form)
    assert response.status_code == 200
    assert any(kind == "error" and message in text for kind, text in flashes(response))
    assert page_state(client) == before


def test_an_address_that_is_taken_is_refused_with_a_reason(web: Web) -> None:
    me, other = web.new_user(), web.new_user()
    client = signed_in(web, me)
    extra = f"mine-{uuid.uuid4().hex[:6]}@home.example"
    assert client.post(PAGE + "/addresses", {"address": extra}).status_code == 200
    before = page_state(client)
    for address, reason in [
        (extra.upper(), f"{extra} is already one of your addresses."),
        (me.email, f"{me.email} is already one of your addresses."),
        (other.email, f"{other.email} already belongs to another user."),
    ]:
        response = client.post(PAGE + "/addresses", {"address": address})
        assert ("error", reason) in flashes(response)
    assert page_state(client) == before
    assert extra in before and other.email not in before


def test_a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    web: Web,
) -> None:
    me, other = web.new_user(), web.new_user()
    client, stranger = signed_in(web, me), signed_in(web, other)
    before = page_state(client)
    attempts = [
        {"address": "a@new.example"},  # no token
        {"address": "a@new.example", "csrf_token": "forged"},
        {"address": "a@new.example", "csrf_token": stranger.csrf},  # another session's
    ]
    for form in attempts:
        response = client.post(PAGE + "/addresses", form, csrf=False)
        assert response.status_code == 403
        assert "nothing was changed" in response.text
    htmx = client.http.post(
        PAGE + "/regenerate", data={"confirm": "yes"}, headers={"HX-Request": "true"}
    )
    assert htmx.status_code == 403
    assert page_state(client) == before
    anonymous = WebClient(web, ip=fresh_ip())
    refused = anonymous.post("/login", {"email": me.email, "password": me.password}, csrf=False)
    assert refused.status_code == 403


def test_members_see_the_exclusion_list_and_only_admins_edit_it(web: Web) -> None:
    admin = web.new_user()
    member = web.new_user(account=admin.account)
    boss, colleague = signed_in(web, admin), signed_in(web, member)
    boss.post(PAGE + "/exclusions", {"pattern": "@Competitor.example"})
    seen = colleague.get(PAGE).text
    assert "@competitor.example" in seen and "an admin edits it" in seen
    before = page_state(colleague)
    for path in ("/exclusions", "/exclusions/remove"):
        response = colleague.post(PAGE + path, {"pattern": "@competitor.example"})
        assert response.status_code == 404
    assert page_state(colleague) == before
    for path in ("/admin/users", "/admin/status", "/settings/account"):
        assert colleague.get(path).status_code == 404


def _user_ids(client: WebClient) -> dict[str, int]:
    text = client.get("/admin/users").text
    rows = re.findall(r'data-user="([^"]+)" data-user-id="(\d+)"', text)
    return {email: int(uid) for email, uid in rows}


def test_another_accounts_users_are_404_and_stay_as_they_were(web: Web) -> None:
    mine, theirs = web.new_user(), web.new_user()
    their_member = web.new_user(account=theirs.account)
    target = _user_ids(signed_in(web, theirs))[their_member.email]
    me = signed_in(web, mine)
    for action, form in [("deactivate", {}), ("activate", {}), ("role", {"role": "admin"})]:
        assert me.post(f"/admin/users/{target}/{action}", form).status_code == 404
    assert me.post("/admin/users/99999999/deactivate").status_code == 404
    again = signed_in(web, their_member)  # still active, still a member
    assert "(member)" in again.get(PAGE).text


def test_a_deactivated_user_is_signed_out_and_their_dropbox_refused_at_once(web: Web) -> None:
    admin = web.new_user()
    member = web.new_user(account=admin.account)
    boss, colleague = signed_in(web, admin), signed_in(web, member)
    uid = _user_ids(boss)[member.email]
    response = boss.post(f"/admin/users/{uid}/deactivate")
    assert any("is deactivated" in text for _, text in flashes(response))
    assert colleague.http.get(PAGE).status_code == 303  # the session is over
    msg = make_message(from_=member.email, to=["c@client.example"])
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        smtp_send(web.crm.smtp, member.email, [member.dropbox["note"]], msg)
    code, text = refused.value.recipients[member.dropbox["note"]]
    assert code == 550 and text.startswith(b"5.1.1")
    assert WebClient(web, ip=fresh_ip()).login(member).status_code == 401
    boss.post(f"/admin/users/{uid}/activate")
    assert smtp_send(web.crm.smtp, member.email, [member.dropbox["note"]], msg) == {}
    own = boss.post(f"/admin/users/{_user_ids(boss)[admin.email]}/deactivate")
    assert ("error", "You cannot deactivate yourself.") in flashes(own)


def test_unknown_email_and_wrong_password_read_the_same(web: Web) -> None:
    user = web.new_user()
    client = WebClient(web, ip=fresh_ip())
    wrong = client.login(user, "not the password")
    unknown = client.login(WebUser(f"nobody-{uuid.uuid4().hex[:6]}@x.example", "pw", "", {}))
    assert wrong.status_code == unknown.status_code == 401
    assert flashes(wrong) == flashes(unknown) == [("error", "Wrong email or password.")]


def test_repeated_failures_for_one_account_are_refused_for_a_while(web: Web) -> None:
    user = web.new_user()
    for _ in range(3):  # CRMDROP_LOGIN_MAX_FAILURES=3 in tests
        assert WebClient(web, ip=fresh_ip()).login(user, "guess").status_code == 401
    refused = WebClient(web, ip=fresh_ip()).login(user)  # even the right password, from elsewhere
    assert refused.status_code == 429
    [(kind, text)] = flashes(refused)
    assert kind == "error" and "refused for 15 minutes" in text
    ghost = WebUser(f"ghost-{uuid.uuid4().hex[:6]}@x.example", "pw", "", {})
    for _ in range(3):
        WebClient(web, ip=fresh_ip()).login(ghost)
    assert flashes(WebClient(web, ip=fresh_ip()).login(ghost)) == [(kind, text)]


def test_repeated_failures_from_one_ip_are_refused_for_a_while(web: Web) -> None:
    user, ip = web.new_user(), fresh_ip()
    for i in range(6):  # CRMDROP_LOGIN_MAX_FAILURES_IP=6 in tests, each a different email
        stranger = WebUser(f"try-{i}-{uuid.uuid4().hex[:6]}@x.example", "pw", "", {})
        assert WebClient(web, ip=ip).login(stranger).status_code == 401
    assert WebClient(web, ip=ip).login(user).status_code == 429
    assert WebClient(web, ip=fresh_ip()).login(user).status_code == 200


def test_a_password_reset_link_lasts_one_hour(web: Web) -> None:
    user = web.new_user()
    client = WebClient(web, ip=fresh_ip())
    client.post("/password/reset", {"email": user.email})
    path = link_in(mail_to(web, user.email), "/password/reset/")
    server = web.crm.server
    url = server.env.get("CRMDROP_DATABASE_URL", f"sqlite:///{server.data_dir / 'crmdrop.db'}")
    db = Database(url)
    try:
        with db.writing() as session:
            token = session.scalars(
                select(UserToken)
                .join(User, User.id == UserToken.user_id)
                .where(User.email == user.email, UserToken.kind == TokenKind.RESET)
            ).one()
            assert token.expires_at - token.created_at == timedelta(hours=1)
            # An hour and a second go by.
            token.created_at -= timedelta(hours=1, seconds=1)
            token.expires_at -= timedelta(hours=1, seconds=1)
    finally:
        db.dispose()
    late = client.post(path, {"password": "too late 1", "confirm": "too late 1"})
    assert late.status_code == 410 and "expired or was already used" in late.text
    assert WebClient(web, ip=fresh_ip()).login(user, "too late 1").status_code == 401
    assert WebClient(web, ip=fresh_ip()).login(user).status_code == 200


def test_a_password_reset_link_works_once(web: Web) -> None:
    user = web.new_user()
    client = WebClient(web, ip=fresh_ip())
    for email in (user.email, f"nobody-{uuid.uuid4().hex[:6]}@x.example"):
        response = client.post("/password/reset", {"email": email})
        assert any("If that address belongs to an account" in t for _, t in flashes(response))
    path = link_in(mail_to(web, user.email), "/password/reset/")
    client.get(path)
    mismatch = client.post(path, {"password": "new password 1", "confirm": "other"})
    assert ("error", "The two passwords differ.") in flashes(mismatch)
    done = client.post(path, {"password": "new password 1", "confirm": "new password 1"})
    assert ("info", "Your password is changed. Sign in with it.") in flashes(done)
    again = client.post(path, {"password": "new password 2", "confirm": "new password 2"})
    assert again.status_code == 410 and "expired or was already used" in again.text
    assert WebClient(web, ip=fresh_ip()).login(user).status_code == 401
    assert WebClient(web, ip=fresh_ip()).login(user, "new password 1").status_code == 200
