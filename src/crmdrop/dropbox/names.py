"""Naming new contacts (SPEC §4.3) and telling free-mail domains from company domains."""

from __future__ import annotations

import re

from crmdrop.mail.names import INVISIBLE, QUOTES, is_usable_name

__all__ = [
    "FREE_MAIL_BRANDS",
    "FREE_MAIL_DOMAINS",
    "contact_name",
    "is_free_mail",
    "is_usable_name",
    "name_from_local_part",
]

# Exact free-mail domains: an address here says nothing about the person's company.
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "msn.com",
        "passport.com",
        "ymail.com",
        "rocketmail.com",
        "aol.com",
        "aim.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "web.de",
        "t-online.de",
        "freenet.de",
        "mail.ru",
        "inbox.ru",
        "list.ru",
        "bk.ru",
        "rambler.ru",
        "proton.me",
        "protonmail.com",
        "protonmail.ch",
        "pm.me",
        "tutanota.com",
        "tuta.io",
        "zoho.com",
        "zohomail.com",
        "qq.com",
        "163.com",
        "126.com",
        "sina.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "mail.com",
        "email.com",
        "fastmail.com",
        "fastmail.fm",
        "hey.com",
        "laposte.net",
        "orange.fr",
        "wanadoo.fr",
        "free.fr",
        "libero.it",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "interia.pl",
        "rediffmail.com",
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
        "bellsouth.net",
        "btinternet.com",
    }
)

# Brands that run the same free service under many country domains: hotmail.co.uk, yahoo.fr.
FREE_MAIL_BRANDS = frozenset(
    {"hotmail", "live", "outlook", "yahoo", "gmx", "yandex", "windowslive"}
)

# Second-level labels of country suffixes such as co.uk, com.au, ne.jp.
_COUNTRY_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "ne", "or"})


def is_free_mail(domain: str) -> bool:
    """True for a free-mail provider's domain: it must never make or match a company."""
    d = domain.strip().lower().rstrip(".")
    if d in FREE_MAIL_DOMAINS:
        return True
    labels = d.split(".")
    if labels[0] not in FREE_MAIL_BRANDS:
        return False
    rest = labels[1:]
    if len(rest) == 1:
        return True
    return len(rest) == 2 and rest[0] in _COUNTRY_SECOND_LEVEL and len(rest[1]) == 2


_PARTICLES = frozenset({"van", "von", "der", "den", "de", "da", "di", "du", "le", "la", "del"})
_COMPANY_SUFFIXES = frozenset({"inc", "ltd", "llc", "gmbh", "ag", "sa", "bv", "plc", "co", "corp"})
_WS = re.compile(r"\s+")
_WORD_CHARS = re.compile(r"^[^\W\d_]+(?:[-'][^\W\d_]+)*$")
_LETTERS = re.compile(r"[^\W\d_]+")
_SEPARATORS = re.compile(r"[._]+")
_DIGITS = re.compile(r"\d+")


def _cap(word: str) -> str:
    """Capitalize each hyphen/apostrophe part: o'brien → O'Brien, jean-luc → Jean-Luc."""
    return _LETTERS.sub(lambda m: m.group(0)[:1].upper() + m.group(0)[1:], word)


def name_from_local_part(local: str) -> str:
    """A person's name guessed from a local part: ``jane.doe`` → ``Jane Doe``.

    Dots and underscores separate words (hyphens too when there is no other separator);
    digits and a `+tag` are dropped; name particles after the first word stay lowercase.
    Falls back to the local part as given when nothing word-like is left.
    """
    base = local.partition("+")[0].lower()
    parts = [p for p in _SEPARATORS.split(base) if p]
    if len(parts) == 1 and "-" in parts[0]:
        parts = [p for p in parts[0].split("-") if p]
    words = [_DIGITS.sub("", p).strip("-'") for p in parts]
    words = [w for w in words if w]
    if not words:
        return local
    out = [_cap(words[0])]
    out += [w if w in _PARTICLES else _cap(w) for w in words[1:]]
    return " ".join(out)


def _clean_display_name(name: str) -> str:
    n = _WS.sub(" ", name).strip().strip(INVISIBLE).strip()
    while len(n) >= 2 and n[0] in QUOTES and n[-1] in QUOTES:
        n = n[1:-1].strip()
    return n


def contact_name(display_name: str, address: str) -> str:
    """The name a new contact gets: the display name the message gives, else the local part.

    A display name that is only the address or its local part (``"jane.doe" <jane.doe@x.io>``)
    is no name. An
    Outlook-style ``Doe, Jane`` becomes ``Jane Doe``.
    """
    name = _clean_display_name(display_name)
    local = address.rpartition("@")[0]
    if is_usable_name(name) and name.lower() != local.lower():
        last, comma, first = name.partition(",")
        last, first = last.strip(), first.strip()
        if (
            comma
            and "," not in first
            and first
            and last
            and first.lower().rstrip(".") not in _COMPANY_SUFFIXES
            and all(_WORD_CHARS.match(w) for w in (last + " " + first).split())
            and len((last + " " + first).split()) <= 4
        ):
            return f"{first} {last}"
        return name
    return name_from_local_part(local)
