from __future__ import annotations

import pytest

from crmdrop.dropbox.names import contact_name, is_free_mail, name_from_local_part


@pytest.mark.parametrize(
    ("display", "address", "expected"),
    [
        ("Jane Doe", "jane@x.io", "Jane Doe"),
        ('"Jane Doe"', "jane@x.io", "Jane Doe"),
        ("'Jane  Doe'", "jane@x.io", "Jane Doe"),
        ("Doe, Jane", "jane@x.io", "Jane Doe"),
        ("Acme, Inc.", "info@x.io", "Acme, Inc."),
        ("jane@x.io", "jane.doe@x.io", "Jane Doe"),
        ("jane.doe", "jane.doe@x.io", "Jane Doe"),
        ("", "jane.doe@x.io", "Jane Doe"),
        ("JANE DOE", "jane@x.io", "JANE DOE"),
    ],
)
def test_a_new_contact_is_named_from_the_display_name_else_the_local_part(
    display: str, address: str, expected: str
) -> None:
    assert contact_name(display, address) == expected


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("jane.doe", "Jane Doe"),
        ("JANE_DOE", "Jane Doe"),
        ("jane-doe", "Jane Doe"),
        ("jean-luc.picard", "Jean-Luc Picard"),
        ("o'brien", "O'Brien"),
        ("ludwig.van.beethoven", "Ludwig van Beethoven"),
        ("jane.doe2", "Jane Doe"),
        ("jane+crm", "Jane"),
        ("12345", "12345"),
    ],
)
def test_names_from_local_parts_are_sensibly_title_cased(local: str, expected: str) -> None:
    assert name_from_local_part(local) == expected


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "hotmail.co.uk",
        "live.de",
        "msn.com",
        "yahoo.com",
        "yahoo.co.jp",
        "ymail.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.ru",
        "yandex.ru",
        "proton.me",
        "protonmail.com",
        "zoho.com",
        "qq.com",
        "163.com",
        "GMail.com",
    ],
)
def test_free_mail_domains_are_recognized(domain: str) -> None:
    assert is_free_mail(domain)


@pytest.mark.parametrize(
    "domain", ["acme.com", "live.acme.com", "yahoo-partners.com", "gmail.acme.io", "customer.io"]
)
def test_company_domains_are_not_free_mail(domain: str) -> None:
    assert not is_free_mail(domain)
