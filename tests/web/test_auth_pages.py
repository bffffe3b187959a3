"""Signing in and out in a real browser, on SQLite and PostgreSQL."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.web.conftest import Web, assert_accessible, logged_in_page, screenshot


def test_a_user_signs_in_and_out(page: Page, web: Web) -> None:
    user = web.new_user()
    page.goto("/")
    expect(page).to_have_url(web.url("/login"))
    assert_accessible(page)
    if web.backend == "sqlite":
        screenshot(page, "login")
    logged_in_page(page, web, user)
    expect(page.get_by_text(f"Signed in as {user.email} (admin)")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(web.url("/login"))
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto("/admin/status")
    expect(page).to_have_url(web.url("/login?next=/admin/status"))


def test_a_wrong_password_is_refused_with_a_plain_message(page: Page, web: Web) -> None:
    user = web.new_user()
    page.goto("/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    assert_accessible(page)


def test_the_admin_status_page_shows_the_queue(page: Page, web: Web) -> None:
    user = web.new_user()
    logged_in_page(page, web, user)
    page.goto("/admin/status")
    expect(page.get_by_role("heading", name="crmdrop is up")).to_be_visible()
    expect(page.get_by_role("table")).to_contain_text("Status")
    assert_accessible(page)
    response = page.goto("/admin/users/99999999")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_have_text("There is nothing here.")
    assert_accessible(page)


def test_a_user_signs_in_with_the_keyboard_alone(page: Page, web: Web) -> None:
    user = web.new_user()
    page.goto("/login")
    page.get_by_label("Email").focus()
    page.keyboard.type(user.email)
    page.keyboard.press("Tab")  # to the password field
    page.keyboard.type(user.password)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/login" not in url)
    expect(page.get_by_text(f"Signed in as {user.email} (admin)")).to_be_visible()


def test_the_main_pages_fit_a_phone_screen(page: Page, web: Web) -> None:
    """At a phone's width (390 px) no page scrolls sideways: everything is reachable."""
    user = web.new_user()
    page.set_viewport_size({"width": 390, "height": 844})
    logged_in_page(page, web, user)
    for path in ("/contacts", "/settings/dropbox", "/tasks", "/activity", "/admin/users"):
        page.goto(path)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} is {overflow} px wider than the phone's screen: " + str(
            page.evaluate(_WIDEST)
        )


_WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .slice(0, 5).map(e => e.tagName + '.' + e.className)"""
