"""Browser tests: Playwright driving Debian's Chromium against the session's `crmdrop serve`
(the `crm` fixture of tests/conftest.py: one server per backend, SQLite and PostgreSQL).

- `browser`: one headless Chromium for the whole run (`/usr/bin/chromium`; Playwright cannot
  download its own browser here);
- `page`: a fresh browser context per test (own cookies), clipboard allowed;
- `web`: the running server plus `new_user()`, a user with a password in a fresh account;
- `logged_in_page(page, web, user)`, `assert_accessible(page)` (axe-core, no serious or
  critical violation), `screenshot(page, name)` (a small PNG in docs/screenshots/).
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import Crm
from tests.support import REPO, Relayed, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).with_name("axe.min.js")
SCREENSHOTS = REPO / "docs" / "screenshots"
PASSWORD = "correct horse battery"


@dataclass
class WebUser:
    email: str
    password: str
    account: str
    dropbox: dict[str, str]


@dataclass
class Web:
    """The running crmdrop, seen from a browser."""

    crm: Crm

    @property
    def backend(self) -> str:
        return self.crm.backend

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.crm.server.http_port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def new_user(self, *, account: str | None = None, password: str = PASSWORD) -> WebUser:
        """A user with a password; in a fresh account (so its admin) unless `account` is given."""
        tag = uuid.uuid4().hex[:10]
        acct = account or f"web-{tag}"
        email = f"user-{tag}@mycorp.example"
        data = self.crm.cli.json(
            "users", "add", email, "--name", f"User {tag}", "--account", acct,
            "--password", password, "--json",
        )  # fmt: skip
        return WebUser(
            email=data["email"], password=password, account=acct, dropbox=data["dropbox"]
        )


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_FLASH = re.compile(r'class="flash flash-(\w+)"[^>]*>([^<]*)<')


class WebClient:
    """A browser without a browser: httpx with the session cookie, for form and status tests."""

    def __init__(self, web: Web, *, ip: str | None = None) -> None:
        headers = {"X-Forwarded-For": ip} if ip else {}
        self.http = httpx.Client(base_url=web.base_url, timeout=30, headers=headers)
        self.csrf = ""

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(path)
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True
    ) -> httpx.Response:
        """Post a form (with the page's CSRF token unless `csrf=False`), following redirects."""
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf or self._token())
        response = self.http.post(path, data=form, follow_redirects=True)
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def _token(self) -> str:
        self.get("/login")
        return self.csrf

    def login(
        self, user: WebUser, password: str | None = None, *, next: str = "/settings/dropbox"
    ) -> httpx.Response:
        self.get("/login")
        form = {"email": user.email, "password": password or user.password, "next": next}
        return self.post("/login", form)

    def close(self) -> None:
        self.http.close()


def link_in(message: Relayed, path: str) -> str:
    """The first link in a relayed mail's text whose path starts with `path`."""
    parsed = email.message_from_bytes(message.content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(("plain",))
    assert body is not None
    text = body.get_content()  # type: ignore[attr-defined]
    found = re.search(r"https?://[^\s/]+(" + re.escape(path) + r"[^\s]*)", text)
    assert found, f"no {path} link in: {text}"
    return str(found.group(1))


def mail_to(web: Web, address: str, count: int = 1) -> Relayed:
    """The `count`-th mail the relay received for `address` (waits for it)."""
    found = wait_for(
        lambda: len(web.crm.relay.messages_to(address)) >= count, what=f"mail to {address}"
    )
    assert found
    return web.crm.relay.messages_to(address)[count - 1]


def flashes(response: httpx.Response) -> list[tuple[str, str]]:
    """The (category, text) of each message shown on the page."""
    return [(c, html.unescape(t)) for c, t in _FLASH.findall(response.text)]


@pytest.fixture
def client(web: Web) -> Iterator[WebClient]:
    c = WebClient(web)
    yield c
    c.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium, for one test file: Playwright's sync API keeps its event loop marked as
    running in this thread until it stops, and a later file in the same pytest-xdist
    worker that calls `asyncio.run` (tests/receive/test_idle_timer.py) would fail."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def web(crm: Crm) -> Web:
    return Web(crm)


@pytest.fixture
def page(browser: Browser, web: Web) -> Iterator[Page]:
    context = browser.new_context(
        base_url=web.base_url,
        accept_downloads=True,
        viewport={"width": 1000, "height": 720},
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web.base_url)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def logged_in_page(page: Page, web: Web, user: WebUser, next: str | None = None) -> Page:
    """Sign `user` in through the login form, as a person would (then at `next`, if given)."""
    page.goto(f"/login?next={next}" if next else "/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def assert_accessible(page: Page) -> None:
    """axe-core on the page as it is now: no serious or critical violation."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
    details = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in bad
    ]
    assert not bad, f"axe violations on {page.url}:\n" + "\n".join(details)


def screenshot(page: Page, name: str) -> Path:
    """A small PNG of the viewport in docs/screenshots/ (the README links them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False, scale="css", animations="disabled")
    return path
