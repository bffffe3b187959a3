"""Render forwarded messages the way mail clients write them, from the label table alone.

The renderer knows each client's *layout* (which separator, which field order, how it
writes names and dates, whether it quotes, flattens or uses a reply-style lead-in) and
takes every word from `crmdrop.mail.labels` (labels, separators, wrote lines) and every
date from CLDR via Babel. It never uses the parser's regexes: what it writes is what a
client writes, and `parse_message` must read it back.
"""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP

from babel.dates import format_date, format_skeleton, format_time, get_datetime_format

from crmdrop.dropbox.names import name_from_local_part
from crmdrop.mail.dates import locale_of
from crmdrop.mail.labels import FIELD_LABELS, SEPARATORS, WROTE_PATTERNS

LANGUAGES: tuple[str, ...] = tuple(FIELD_LABELS)
FIELDS = ("from", "date", "to", "cc", "subject")


@dataclass(frozen=True)
class Person:
    name: str
    address: str | None
    last: str = ""  # family name, for "Last, First" layouts
    first: str = ""


PEOPLE: tuple[Person, ...] = (
    Person("Jane Doe", "jane.doe@client.example", "Doe", "Jane"),
    Person("Иван Петров", "ivan.petrov@client.example", "Петров", "Иван"),
    Person("山田 太郎", "taro.yamada@client.example"),
    Person("محمد علي", "m.ali@client.example"),
    Person("Γιώργος Παπαδόπουλος", "giorgos@client.example"),
    Person("Zoë O'Brien-Smith", "zoe.obrien@client.example", "O'Brien-Smith", "Zoë"),
    Person("José Álvarez", "jose.alvarez@client.example", "Álvarez", "José"),
    Person("김민준", "minjun.kim@client.example"),
)
RECIPIENTS: tuple[Person, ...] = (
    Person("Sales Team", "sales@ourco.example"),
    Person("Ann Lee", "ann.lee@ourco.example", "Lee", "Ann"),
    Person("Bob Stone", "bob.stone@partner.example", "Stone", "Bob"),
)
CC: tuple[Person, ...] = (
    Person("Carla Copy", "carla.copy@client.example", "Copy", "Carla"),
    Person("Dieter Müller", "dieter@client.example", "Müller", "Dieter"),
)
OLDER = Person("Paul Older", "paul.older@vendor.example", "Older", "Paul")


@dataclass(frozen=True)
class Layout:
    """How one client writes a forwarded header block."""

    separator: tuple[str, str] | None  # (client, kind) looked up in SEPARATORS
    decoration: str = "---------- {} ----------"
    order: tuple[str, ...] = ("from", "date", "subject", "to", "cc")
    date_style: str = "long_at"  # long_at | full | numeric | yahoo | on_full | samsung
    names: str = "plain"  # plain | quoted | brackets | comma
    date_label: int | None = None  # which date label (None: the rotation picks)
    quoted: bool = False  # header and body quoted with ">"
    flattened: bool = False  # Yahoo: all fields on one line
    leadin: bool = False  # Outlook 2019: "El <date>, "Name" <addr> escribió:"
    cc_paren: bool = False  # Thunderbird: prefers "Kopie (CC)"-style labels
    bold: str = ""  # plain-text bold markers around labels
    blank_after_separator: bool = False
    html_only: bool = False


UNDERSCORE = ("__underscore__", "")

CLIENTS: dict[str, Layout] = {
    "gmail": Layout(("gmail", "forward"), "---------- {} ---------"),
    "outlook_2013": Layout(
        ("outlook", "original"),
        "-----{}-----",
        ("from", "date", "to", "cc", "subject"),
        "full",
        "brackets",
        date_label=0,
    ),
    "outlook_2016": Layout(
        UNDERSCORE, "", ("from", "date", "to", "cc", "subject"), "full", date_label=0
    ),
    "outlook_2019": Layout(None, leadin=True, date_style="numeric"),
    "outlook_new": Layout(
        UNDERSCORE, "", ("from", "date", "to", "cc", "subject"), "full", date_label=0, bold="*"
    ),
    "outlook_web": Layout(
        UNDERSCORE, "", ("from", "date", "to", "cc", "subject"), "full", "comma", date_label=0
    ),
    "apple_mail": Layout(
        ("apple", "forward"),
        "{}:",
        ("from", "subject", "date", "to", "cc"),
        blank_after_separator=True,
    ),
    "thunderbird": Layout(
        ("thunderbird", "forward"),
        "-------- {} --------",
        ("subject", "date", "from", "to", "cc"),
        "numeric",
        cc_paren=True,
    ),
    "yahoo": Layout(
        ("thunderbird", "forward"),
        "----- {} -----",
        ("from", "to", "cc", "date", "subject"),
        "yahoo",
        flattened=True,
        date_label=0,
    ),
    "hubspot": Layout(("gmail", "forward"), "---------- {} ---------", html_only=True),
    "ionos": Layout(None, "", ("date", "from", "to", "cc", "subject"), "full", date_label=0),
    "mailmate": Layout(
        ("gmail", "forward"), "{}:", ("from", "to", "cc", "subject", "date"), quoted=True
    ),
    "missive": Layout(
        ("apple", "forward"),
        "{}:",
        ("from", "date", "to", "cc", "subject"),
        blank_after_separator=True,
    ),
    "zimbra": Layout(
        ("thunderbird", "forward"),
        "----- {} -----",
        ("from", "to", "cc", "date", "subject"),
        "full",
        "quoted",
        date_label=0,
    ),
    "proton": Layout(("thunderbird", "forward"), "------- {} -------", date_style="on_full"),
    "fastmail": Layout(
        ("outlook", "original"), "----- {} -----", ("from", "to", "cc", "subject", "date")
    ),
    "spark": Layout(
        ("gmail", "forward"), "---------- {} ----------", ("from", "date", "to", "cc", "subject")
    ),
    "samsung": Layout(
        ("samsung", "original"),
        "-------- {} --------",
        ("from", "date", "to", "cc", "subject"),
        "samsung",
    ),
    "ios_mobile": Layout(
        ("apple", "forward"),
        "{}:",
        ("from", "date", "to", "cc", "subject"),
        quoted=True,
        blank_after_separator=True,
    ),
    "generic": Layout(
        ("outlook", "original"),
        "-----{}-----",
        ("from", "date", "to", "subject"),
        "full",
        date_label=0,
    ),
}

# Variations applied on top of a layout.
VARIATIONS: tuple[str, ...] = (
    "plain",
    "crlf",
    "bom",
    "html",
    "wrapped",
    "mailto",
    "comma_name",
    "quoted_name",
    "no_name",
    "name_only",
    "nested",
    "in_reply",
)


@dataclass(frozen=True)
class Case:
    client: str
    language: str
    variation: str = "plain"
    author: Person = PEOPLE[0]
    to: tuple[Person, ...] = RECIPIENTS[:1]
    cc: tuple[Person, ...] = CC[:1]
    when: datetime = datetime(2021, 11, 23, 9, 26)
    subject: str = "Angebot 4711"
    pick: int = 0  # rotates through each field's labels


@dataclass
class Expected:
    """What the parser must read from the target block."""

    index: int  # the block's position in ParsedMessage.forwarded
    address: str | None
    name: str  # the contact name SPEC §4.3 wants
    when: datetime
    subject: str | None  # None: the layout does not carry it
    cc: frozenset[str] | None  # None: the layout does not carry it
    nested: Person | None = None  # nested forward: the older author at index + 1
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Rendered:
    case: Case
    raw: bytes
    body: str
    expected: Expected


# --- words from the table --------------------------------------------------------------


def _labels(language: str, name: str) -> tuple[str, ...]:
    return tuple(lbl.rstrip(":") for lbl in FIELD_LABELS[language][name])


def _label(language: str, name: str, pick: int, layout: Layout) -> str:
    labels = _labels(language, name)
    if name == "cc" and layout.cc_paren:
        paren = [lbl for lbl in labels if "(" in lbl]
        if paren:
            return paren[0]
    if name == "date" and layout.date_label is not None:
        return labels[layout.date_label % len(labels)]
    return labels[pick % len(labels)]


def _separator(language: str, layout: Layout) -> str:
    assert layout.separator is not None
    client, kind = layout.separator
    rows = SEPARATORS.get(language) or SEPARATORS["en"]
    for want in (
        lambda r: r[1] == client,
        lambda r: r[2] == kind,
        lambda r: r[2] == "forward",
        lambda r: True,
    ):
        found = [r for r in rows if want(r)]
        if found:
            return found[0][0]
    raise AssertionError(language)


def _wrote_template(language: str) -> str:
    """The language's first lead-in that names both the date and the author."""
    rows = WROTE_PATTERNS.get(language) or WROTE_PATTERNS[language.split("-")[0]]
    good = [t for t in rows if "{date}" in t and "{who}" in t and "{any}" not in t]
    leading = [t for t in good if not t.startswith("{who}")]
    return (leading or good)[0]


# --- values ------------------------------------------------------------------------------

_QUOTES = {"fr": ("« ", " »"), "pl": ("„", "”"), "de": ("„", "“"), "hu": ("„", "”")}


def _fmt_date(when: datetime, language: str, style: str) -> str:
    loc = locale_of(language)
    time = format_time(when, "short", locale=loc)
    if style == "full":
        return f"{format_date(when, 'full', locale=loc)} {time}"
    if style == "on_full":
        return f"On {format_date(when, 'full', locale=loc)} {time}"
    if style == "numeric":
        return f"{format_skeleton('yMd', when, locale=loc)} {time}"
    if style == "samsung":
        return when.strftime("%d/%m/%Y %H:%M") + " (GMT+01:00)"
    if style == "yahoo":
        secs = format_time(when, "medium", locale=loc)
        return f"{format_date(when, 'full', locale=loc)}, {secs} GMT+1"
    pattern = str(get_datetime_format("long", locale=loc))
    text = pattern.replace("{1}", format_date(when, "long", locale=loc)).replace("{0}", time)
    return text.replace("'", "")


def _mailbox(p: Person, style: str, language: str) -> str:
    if p.address is None:
        return p.name
    if not p.name:
        return p.address
    if style == "brackets":
        return f"{p.name} [mailto:{p.address}]"
    if style == "mailto":
        return f"{p.name} <mailto:{p.address}>"
    if style == "quoted":
        return f'"{p.name}" <{p.address}>'
    if style == "comma" and p.last:
        return f"{p.last}, {p.first} <{p.address}>"
    if style == "quoted_comma" and p.last:
        return f'"{p.last}, {p.first}" <{p.address}>'
    if style == "guillemets":
        left, right = _QUOTES.get(language, ('"', '"'))
        return f"{left}{p.name}{right} <{p.address}>"
    return f"{p.name} <{p.address}>"


def _mailboxes(people: tuple[Person, ...], style: str, language: str, sep: str) -> str:
    return sep.join(_mailbox(p, style, language) for p in people)


# --- one block ---------------------------------------------------------------------------


def _header_lines(case: Case, layout: Layout, author: Person, style: str) -> list[str]:
    lang = case.language
    list_sep = "; " if style in ("comma", "brackets") else ", "
    values = {
        "from": _mailbox(author, style, lang),
        "date": _fmt_date(case.when, lang, layout.date_style),
        "to": _mailboxes(case.to, style, lang, list_sep),
        "cc": _mailboxes(case.cc, style, lang, list_sep),
        "subject": case.subject,
    }
    lines = []
    for name in layout.order:
        if name == "cc" and not case.cc:
            continue
        label = _label(lang, name, case.pick, layout)
        b = layout.bold
        line = f"{b}{label}:{b} {values[name]}"
        if case.variation == "wrapped" and name in ("to", "cc", "from"):
            lines.extend(textwrap.wrap(line, 40, break_long_words=False, break_on_hyphens=False))
            continue
        lines.append(line)
    if layout.flattened:
        return ["".join(lines)]
    return lines


def _block(case: Case, layout: Layout, author: Person, style: str, body: str) -> list[str]:
    lang = case.language
    if layout.leadin:
        template = _wrote_template(lang)
        date = _fmt_date(case.when, lang, layout.date_style)
        who = _mailbox(author, "guillemets" if style == "plain" else style, lang)
        line = template.replace("{date}", date).replace("{who}", who)
        return [line, "", body]
    out: list[str] = []
    if layout.separator == UNDERSCORE:
        out.append("_" * 32)
    elif layout.separator is not None:
        out.append(layout.decoration.format(_separator(lang, layout)))
        if layout.blank_after_separator:
            out.append("")
    header = _header_lines(case, layout, author, style)
    if layout.quoted:
        return [*out, *(f"> {ln}" for ln in header), ">", *(f"> {ln}" for ln in body.split("\n"))]
    return [*out, *header, "", body]


def _style(case: Case, layout: Layout) -> str:
    v = case.variation
    if v == "mailto":
        return "brackets" if layout.names != "brackets" else "mailto"
    if v == "comma_name":
        return "comma" if layout.names == "comma" else "quoted_comma"
    if v == "quoted_name":
        return "quoted"
    return layout.names


def _author(case: Case) -> Person:
    a = case.author
    if case.variation == "no_name":
        return Person("", a.address)
    if case.variation == "name_only":
        return Person(a.name, None)
    return a


def _expected_name(p: Person, style: str) -> str:
    """The contact name SPEC §4.3 wants: the display name, else from the local part."""
    if p.name:
        return p.name
    assert p.address is not None
    return name_from_local_part(p.address.partition("@")[0])


def render(case: Case) -> Rendered:
    """One forwarded message as `case` says, as raw bytes, with what the parser must find."""
    layout = CLIENTS[case.client]
    if case.variation == "name_only" and layout.leadin:
        case = replace(case, variation="plain")  # a lead-in always names an address
    style = _style(case, layout)
    author = _author(case)
    inner_body = "Original words of the customer.\nSecond line."
    nested = None
    if case.variation == "nested" and not layout.leadin:
        nested = OLDER
        older = replace(case, variation="plain", author=OLDER, cc=())
        inner = _block(older, CLIENTS["gmail"], OLDER, "plain", "The oldest words.")
        inner_body = "My comment on the older mail.\n\n" + "\n".join(inner)
    lines = _block(case, layout, author, style, inner_body)
    index = 0
    top = ["Please file this.", ""]
    if case.variation == "in_reply":
        index = 1
        colleague = Person("Colin League", "colin@ourco.example")
        wrote = _wrote_template(case.language)
        lead = wrote.replace(
            "{date}", _fmt_date(datetime(2021, 11, 24, 8, 0), case.language, "long_at")
        )
        lines = [
            lead.replace("{who}", _mailbox(colleague, "plain", case.language)),
            *(f"> {ln}" if ln else ">" for ln in ["Have a look.", "", *lines]),
        ]
    body = "\n".join([*top, *lines, ""])
    if case.variation == "bom":
        body = "\ufeff" + body
    expected = Expected(
        index=index,
        address=author.address,
        name=_expected_name(author, style),
        when=case.when,
        subject=None if layout.leadin else case.subject,
        cc=None
        if layout.leadin or "cc" not in layout.order
        else frozenset(p.address for p in case.cc if p.address),
        nested=nested,
    )
    html_part = case.variation == "html" or layout.html_only
    return Rendered(case, _message(case, body, html_part), body, expected)


def _to_html(body: str) -> str:
    """The same block as an HTML-only client writes it: <div>/<br>, <b> labels, mailto."""
    out = []
    depth = 0
    for line in body.split("\n"):
        want = len(line) - len(line.lstrip(">")) if line.startswith(">") else 0
        text = line[want:].lstrip() if want else line
        while depth < want:
            out.append('<blockquote type="cite">')
            depth += 1
        while depth > want:
            out.append("</blockquote>")
            depth -= 1
        esc = html.escape(text, quote=False)
        head, colon, rest = esc.partition(":")
        if colon and 0 < len(head) <= 30 and " " not in head.strip().replace(" (", "("):
            esc = f"<b>{head}:</b>{rest}"
        out.append(f"<div>{esc}</div>" if text else "<div><br></div>")
    out.extend("</blockquote>" for _ in range(depth))
    return "<html><body>" + "".join(out) + "</body></html>"


def _message(case: Case, body: str, as_html: bool) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Owner Person <owner@ourco.example>"
    msg["To"] = "dropbox@crm.example"
    msg["Subject"] = ("Re: " if case.variation == "in_reply" else "Fwd: ") + case.subject
    msg["Date"] = "Wed, 24 Nov 2021 10:00:00 +0000"
    msg["Message-ID"] = f"<{case.client}.{case.language}.{case.variation}@ourco.example>"
    if as_html:
        msg.set_content(_to_html(body), subtype="html", charset="utf-8", cte="base64")
    else:
        msg.set_content(body, charset="utf-8", cte="base64")
    linesep = "\r\n" if case.variation == "crlf" else "\n"
    raw = msg.as_bytes(policy=SMTP.clone(linesep=linesep))
    if case.variation == "crlf":
        # the body itself with CRLF too (base64 keeps the text's own line ends)
        msg.set_content(body.replace("\n", "\r\n"), charset="utf-8", cte="base64")
        raw = msg.as_bytes(policy=SMTP.clone(linesep=linesep))
    return raw


__all__ = [
    "CC",
    "CLIENTS",
    "LANGUAGES",
    "PEOPLE",
    "RECIPIENTS",
    "VARIATIONS",
    "Case",
    "Expected",
    "Person",
    "Rendered",
    "render",
]
