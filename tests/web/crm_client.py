"""A signed-in HTTP client for the CRM pages (no browser): for bad input, CSRF and 404s."""

from __future__ import annotations

import re
import uuid
from email.message import EmailMessage
from typing import Any

import httpx

from tests.support import smtp_send, wait_for
from tests.web.conftest import Web, WebUser

_CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


class Client:
    """One signed-in session: `get`, `post` (with the CSRF token), the export."""

    def __init__(self, web: Web, user: WebUser) -> None:
        self.web = web
        self.user = user
        self.http = httpx.Client(base_url=web.base_url, timeout=30)
        page = self.http.get("/login")
        self.csrf = self._token(page.text)
        done = self.http.post(
            "/login",
            data={"email": user.email, "password": user.password, "csrf_token": self.csrf},
        )
        assert done.status_code == 303, done.text
        self.csrf = self._token(self.http.get("/contacts").text)

    @staticmethod
    def _token(html: str) -> str:
        found = _CSRF.search(html)
        assert found, html[:500]
        return found.group(1)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def post(self, path: str, csrf: bool = True, **data: Any) -> httpx.Response:
        if csrf:
            data["csrf_token"] = self.csrf
        return self.http.post(path, data=data)

    def flash(self, response: httpx.Response) -> str:
        """Follow a post's redirect; the page's flash messages."""
        assert response.status_code == 303, (response.status_code, response.text[:300])
        html = self.http.get(response.headers["location"]).text
        return " ".join(re.findall(r'class="flash flash-\w+"[^>]*>([^<]*)<', html))

    def export(self) -> dict[str, Any]:
        return self.web.crm.export(self.user.account)

    def send(self, msg: EmailMessage, box: str = "note", settle: int | None = None) -> None:
        """Send `msg` over SMTP to one of the user's dropboxes; wait for `settle` deliveries
        of the account to be processed."""
        smtp_send(self.web.crm.smtp, self.user.email, [self.user.dropbox[box]], msg)
        if settle is not None:
            self.web.crm.settled(self.user.account, settle)

    def close(self) -> None:
        self.http.close()


def tag() -> str:
    return uuid.uuid4().hex[:8]


def wait_status(client: Client, delivery_id: int, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        for d in client.export()["deliveries"]:
            if d["id"] == delivery_id and d["status"] == status:
                return client.export()
        return None

    result: dict[str, Any] = wait_for(check, what=f"delivery {delivery_id} {status}")
    return result
