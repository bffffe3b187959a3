from __future__ import annotations

import math
import re

import pytest

from crmdrop.dropbox.address import (
    TOKEN_LENGTH,
    dropbox_addresses,
    is_dropbox_domain,
    new_token,
    parse_dropbox_address,
    redact,
    redact_text,
)
from crmdrop.dropbox.plan import DropboxKind

D = "drop.example.com"


def test_new_tokens_are_20_lowercase_base36_characters() -> None:
    token = new_token()
    assert len(token) == TOKEN_LENGTH == 20
    assert re.fullmatch(r"[a-z0-9]{20}", token)


def test_new_tokens_carry_at_least_80_bits() -> None:
    assert TOKEN_LENGTH * math.log2(36) >= 80


def test_new_tokens_differ_each_time() -> None:
    assert len({new_token() for _ in range(200)}) == 200


def test_it_gives_six_addresses_one_per_kind() -> None:
    addresses = dropbox_addresses("abc123", D)
    assert addresses == {
        DropboxKind.NOTE: "dropbox-abc123@drop.example.com",
        DropboxKind.CASE: "dropbox-abc123-case@drop.example.com",
        DropboxKind.OPP: "dropbox-abc123-opp@drop.example.com",
        DropboxKind.TASK: "dropbox-abc123-task@drop.example.com",
        DropboxKind.TODAY: "dropbox-abc123-today@drop.example.com",
        DropboxKind.TOMORROW: "dropbox-abc123-tomorrow@drop.example.com",
    }


@pytest.mark.parametrize("kind", list(DropboxKind))
def test_every_generated_address_parses_back_to_its_token_and_kind(kind: DropboxKind) -> None:
    token = new_token()
    assert parse_dropbox_address(dropbox_addresses(token, D)[kind], D) == (token, kind)


def test_parsing_is_case_insensitive() -> None:
    assert parse_dropbox_address("DropBox-ABC123-Case@Drop.Example.COM", D) == (
        "abc123",
        DropboxKind.CASE,
    )


def test_it_ignores_a_plus_tag_after_the_local_part() -> None:
    assert parse_dropbox_address("dropbox-abc123-opp+acme-deal@drop.example.com", D) == (
        "abc123",
        DropboxKind.OPP,
    )
    assert parse_dropbox_address("dropbox-abc123+x@drop.example.com", D) == (
        "abc123",
        DropboxKind.NOTE,
    )


def test_it_accepts_angle_brackets_as_given_at_rcpt_time() -> None:
    assert parse_dropbox_address("<dropbox-abc123@drop.example.com>", D) == (
        "abc123",
        DropboxKind.NOTE,
    )


@pytest.mark.parametrize(
    "address",
    [
        "dropbox-abc123@other.example.com",
        "dropbox-abc123@sub.drop.example.com",
        "jane@drop.example.com",
        "dropbox-@drop.example.com",
        "dropbox-abc123-invoice@drop.example.com",
        "dropbox-abc-123@drop.example.com",
        "not an address",
    ],
)
def test_it_parses_nothing_but_dropbox_addresses_on_the_domain(address: str) -> None:
    assert parse_dropbox_address(address, D) is None


def test_is_dropbox_domain_matches_the_domain_exactly_and_case_insensitively() -> None:
    assert is_dropbox_domain("anyone@DROP.example.com", D)
    assert is_dropbox_domain("anyone@drop.example.com.", D)
    assert not is_dropbox_domain("anyone@sub.drop.example.com", D)
    assert not is_dropbox_domain("anyone@example.com", D)
    assert not is_dropbox_domain("no-at-sign", D)


def test_is_dropbox_domain_treats_punycode_and_unicode_domains_alike() -> None:
    assert is_dropbox_domain("x@xn--bcher-kva.example", "bücher.example")
    assert parse_dropbox_address("dropbox-abc@bücher.example", "xn--bcher-kva.example") == (
        "abc",
        DropboxKind.NOTE,
    )


def test_redact_hides_the_token_but_keeps_kind_and_domain() -> None:
    assert (
        redact("dropbox-abcdef123456-case@drop.example.com") == "dropbox-ab…-case@drop.example.com"
    )
    assert redact("dropbox-abcdef123456+tag@drop.example.com") == "dropbox-ab…+tag@drop.example.com"


def test_redact_leaves_other_addresses_alone() -> None:
    assert redact("jane@customer.io") == "jane@customer.io"


def test_redact_text_hides_every_token_in_a_log_line() -> None:
    line = "RCPT dropbox-aaaa1111@d.io and DROPBOX-bbbb2222-task@d.io rejected"
    assert redact_text(line) == "RCPT dropbox-aa…@d.io and DROPBOX-bb…-task@d.io rejected"
