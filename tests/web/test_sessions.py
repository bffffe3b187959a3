"""The session cookie and what `crmdrop serve` prints about the web app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SERVER_ENV, OwnServer, own_server
from tests.web.conftest import Web, WebClient


def _session_cookie(response: httpx.Response) -> str:
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    [cookie] = [c for c in cookies if c.startswith("crmdrop_session=")]
    return cookie.lower()


def test_the_session_cookie_is_httponly_and_samesite_lax(web: Web) -> None:
    user = web.new_user()
    client = WebClient(web)
    client.get("/login")
    response = client.http.post(
        "/login",
        data={"email": user.email, "password": user.password, "csrf_token": client.csrf},
    )
    assert response.status_code == 303
    cookie = _session_cookie(response)
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    healthz = client.http.get("/healthz")
    assert healthz.json()["status"] == "up" and len(healthz.content) < 200
    assert "set-cookie" not in healthz.headers  # public and tiny: no session made


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServer]:
    """A server with the demo account, believed to be at an https:// address (a TLS proxy)."""
    env = {**SERVER_ENV, "CRMDROP_PUBLIC_URL": "https://crm.example.test"}
    yield from own_server("sqlite", tmp_path_factory.mktemp("public"), env, demo=True)


def test_serve_prints_where_to_sign_in_and_https_makes_the_cookie_secure(
    public: OwnServer,
) -> None:
    log = Path(public.server.log_path).read_text()
    assert "sign in at https://crm.example.test/ as demo@example.com, password demo" in log
    base = f"http://127.0.0.1:{public.server.http_port}"
    with httpx.Client(base_url=base, timeout=30) as http:
        page = http.get("/login")
        anonymous = _session_cookie(page)
        assert "; secure" in anonymous  # so a client on plain http must hand it back itself
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        response = http.post(
            "/login",
            data={"email": "demo@example.com", "password": "demo", "csrf_token": token},
            headers={"Cookie": page.headers["set-cookie"].split(";", 1)[0]},
        )
    assert response.status_code == 303 and response.headers["location"] == "/contacts"
    assert "; secure" in _session_cookie(response)
