"""Accounts, users, their addresses and exclusion lists (SPEC §1, §2.3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.orm import Session

from crmdrop.dropbox.address import new_token
from crmdrop.dropbox.plan import UserInfo
from crmdrop.mail.addresses import is_plausible_address, normalize_address, normalize_domain
from crmdrop.store.models import (
    Account,
    Company,
    CompanyEmail,
    Exclusion,
    RevokedAttempt,
    RevokedToken,
    Role,
    User,
    UserAddress,
)


class StoreError(ValueError):
    """A request the store refuses, with a message meant for the person who asked."""


class Missing(StoreError):
    """The object is not there for whoever asked (deleted meanwhile, or another account's)."""


def now() -> datetime:
    return datetime.now(UTC)


def get_account(session: Session, name: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        raise StoreError(f"no account named {name!r}")
    return account


def get_or_create_account(session: Session, name: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        account = Account(name=name, created_at=now())
        session.add(account)
        session.flush()
    return account


def find_user(session: Session, email: str) -> User | None:
    """The user with this signup address, or None."""
    return session.scalar(select(User).where(User.email == normalize_address(email)))


def get_user(session: Session, email: str) -> User:
    user = find_user(session, email)
    if user is None:
        raise StoreError(f"no user with signup address {email!r}")
    return user


def _check_address(address: str) -> str:
    normalized = normalize_address(address)
    if not is_plausible_address(normalized):
        raise StoreError(f"{address!r} is not a valid email address")
    return normalized


def _address_owner(session: Session, address: str) -> User | None:
    user = session.scalar(select(User).where(User.email == address))
    if user is not None:
        return user
    extra = session.scalar(select(UserAddress).where(UserAddress.email == address))
    return session.get(User, extra.user_id) if extra is not None else None


def add_user(
    session: Session,
    email: str,
    *,
    name: str,
    account: str,
    timezone: str = "UTC",
    password_hash: str | None = None,
) -> User:
    """Sign a user up in `account` (created if new), with a fresh dropbox token.

    The first user of an account is its admin; later ones are members.
    """
    address = _check_address(email)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise StoreError(f"unknown time zone {timezone!r}") from exc
    if _address_owner(session, address) is not None:
        raise StoreError(f"{address} already belongs to a user")
    acc = get_or_create_account(session, account)
    first = session.scalar(select(User.id).where(User.account_id == acc.id).limit(1)) is None
    user = User(
        account_id=acc.id,
        role=Role.ADMIN if first else Role.MEMBER,
        email=address,
        name=name,
        timezone=timezone,
        password_hash=password_hash,
        token=new_token(),
        created_at=now(),
    )
    session.add(user)
    session.flush()
    return user


def add_user_address(session: Session, user_email: str, address: str) -> UserAddress:
    """An additional address counts as the user's own at once (SPEC §1.2)."""
    user = get_user(session, user_email)
    normalized = _check_address(address)
    owner = _address_owner(session, normalized)
    if owner is not None and owner.id == user.id:
        raise StoreError(f"{normalized} is already one of your addresses")
    if owner is not None:
        raise StoreError(f"{normalized} already belongs to another user")
    extra = UserAddress(user_id=user.id, email=normalized, verified=False, created_at=now())
    session.add(extra)
    session.flush()
    return extra


def verify_address(session: Session, user_email: str, address: str) -> UserAddress:
    """Mark an additional address verified (SPEC §1.2): replies may then go to it (§6.4).

    An administrator vouches for it here; the mailed link or code is the web UI's job.
    """
    user = get_user(session, user_email)
    normalized = normalize_address(address)
    extra = session.scalar(
        select(UserAddress).where(UserAddress.user_id == user.id, UserAddress.email == normalized)
    )
    if extra is None:
        raise StoreError(f"{normalized} is not an additional address of {user.email}")
    extra.verified = True
    return extra


def set_reply_all(session: Session, user_email: str, accept: bool) -> User:
    """Whether contacts replying to all may file into the user's dropbox (SPEC §3.2)."""
    user = get_user(session, user_email)
    user.accept_reply_all = accept
    return user


def add_exclusion(session: Session, account: str, pattern: str) -> Exclusion:
    """An exact address or a whole `@domain` (SPEC §1.3)."""
    acc = get_account(session, account)
    raw = pattern.strip()
    if raw.startswith("@"):
        domain = normalize_domain(raw)
        if "." not in domain or not is_plausible_address("x@" + domain):
            raise StoreError(f"{pattern!r} is not a domain")
        value = "@" + domain
    else:
        value = _check_address(raw)
    existing = session.scalar(
        select(Exclusion).where(Exclusion.account_id == acc.id, Exclusion.pattern == value)
    )
    if existing is not None:
        return existing
    entry = Exclusion(account_id=acc.id, pattern=value)
    session.add(entry)
    session.flush()
    return entry


def regenerate_token(session: Session, user_email: str) -> User:
    """A new token at once; the six old addresses stop working (SPEC §2.3).

    The old token is kept as revoked, so attempts to use it can be shown to the user.
    """
    user = get_user(session, user_email)
    session.add(RevokedToken(token=user.token, user_id=user.id, revoked_at=now()))
    user.token = new_token()
    session.flush()
    return user


def remove_user_address(session: Session, user_email: str, address: str) -> None:
    """The address is no longer the user's; mail from it is a stranger's again."""
    user = get_user(session, user_email)
    extra = session.scalar(
        select(UserAddress).where(
            UserAddress.user_id == user.id, UserAddress.email == normalize_address(address)
        )
    )
    if extra is None:
        raise Missing(f"{address} is not one of your additional addresses (any more)")
    session.delete(extra)
    session.flush()


def exclusions(session: Session, account: str) -> list[str]:
    """The account's exclusion list, domains first, each part sorted."""
    acc = get_account(session, account)
    patterns = session.scalars(select(Exclusion.pattern).where(Exclusion.account_id == acc.id))
    return sorted(patterns, key=lambda p: (not p.startswith("@"), p))


def remove_exclusion(session: Session, account: str, pattern: str) -> None:
    acc = get_account(session, account)
    entry = session.scalar(
        select(Exclusion).where(Exclusion.account_id == acc.id, Exclusion.pattern == pattern)
    )
    if entry is None:
        raise Missing(f"{pattern} is not on the exclusion list (any more)")
    session.delete(entry)
    session.flush()


def set_timezone(session: Session, user_email: str, timezone: str) -> User:
    """The zone that `-today`/`-tomorrow` tasks and task dates are read in (SPEC §5)."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise StoreError(f"unknown time zone {timezone!r}") from exc
    user = get_user(session, user_email)
    user.timezone = timezone
    return user


def revoked_owner(conn: Connection, token: str) -> int | None:
    """The user whose regenerated (revoked) token this is, or None (unknown, or live)."""
    owner: int | None = conn.execute(
        select(RevokedToken.user_id).where(RevokedToken.token == token)
    ).scalar_one_or_none()
    return owner


def record_revoked_attempt(
    conn: Connection, user_id: int, *, rcpt_to: str, mail_from: str, peer: str
) -> None:
    """Someone sent to one of `user_id`'s revoked addresses: shown under Regenerate."""
    conn.execute(
        insert(RevokedAttempt).values(
            user_id=user_id, rcpt_to=rcpt_to, mail_from=mail_from, peer=peer, at=now()
        )
    )


def set_preference(session: Session, account: str, name: str, value: bool) -> Account:
    acc = get_account(session, account)
    if name == "file-under-companies":
        acc.file_under_companies = value
    elif name == "discard-automated":
        acc.discard_automated = value
    else:
        raise StoreError(f"unknown preference {name!r}")
    return acc


def add_company(
    session: Session, name: str, *, account: str, domain: str | None, emails: list[str]
) -> Company:
    acc = get_account(session, account)
    dom = normalize_domain(domain) if domain else None
    company = Company(account_id=acc.id, name=name, domain=dom, created_at=now())
    session.add(company)
    session.flush()
    for email in emails:
        session.add(
            CompanyEmail(account_id=acc.id, company_id=company.id, email=_check_address(email))
        )
    session.flush()
    return company


@dataclass(frozen=True)
class Recipient:
    """A live dropbox owner, as the RCPT check finds them."""

    user_id: int
    account_id: int
    user_email: str


_OWNER_BY_TOKEN = (
    select(
        User.id,
        User.account_id,
        User.email,
        User.name,
        User.timezone,
        User.accept_reply_all,
        UserAddress.email.label("extra"),
        UserAddress.verified,
    )
    .outerjoin(UserAddress, UserAddress.user_id == User.id)
    .where(User.token == bindparam("token"), User.active.is_(True))
)


def dropbox_owner(conn: Connection | Session, token: str) -> tuple[Recipient, UserInfo] | None:
    """The owner of a live token and what the sender check needs of them.

    One joined query on a plain connection: it runs at every RCPT.
    """
    rows = conn.execute(_OWNER_BY_TOKEN, {"token": token}).all()
    if not rows:
        return None
    first = rows[0]
    recipient = Recipient(user_id=first.id, account_id=first.account_id, user_email=first.email)
    return recipient, _user_info(rows)


def _user_info(rows: Sequence[Any]) -> UserInfo:
    """A user's rows, one per additional address (`extra`, `verified`; None: none)."""
    first = rows[0]
    extras = [(r.extra, r.verified) for r in rows if r.extra is not None]
    return UserInfo(
        id=first.id,
        name=first.name,
        signup_email=first.email,
        addresses=frozenset([first.email, *(e for e, _ in extras)]),
        verified=frozenset([first.email, *(e for e, v in extras if v)]),
        timezone=first.timezone,
        accept_reply_all=first.accept_reply_all,
    )


_USER_ROW = select(User.name, User.email, User.timezone, User.accept_reply_all).where(
    User.id == bindparam("user")
)
_USER_EXTRAS = select(UserAddress.email, UserAddress.verified).where(
    UserAddress.user_id == bindparam("user")
)


def user_info(session: Session, user: User | int) -> UserInfo:
    """The owner as `decide` and the sender check see them (prebuilt statements: hot path)."""
    user_id = user if isinstance(user, int) else user.id
    row = session.execute(_USER_ROW, {"user": user_id}).one()
    extras = session.execute(_USER_EXTRAS, {"user": user_id}).all()
    return UserInfo(
        id=user_id,
        name=row.name,
        signup_email=row.email,
        addresses=frozenset([row.email, *(e.email for e in extras)]),
        verified=frozenset([row.email, *(e.email for e in extras if e.verified)]),
        timezone=row.timezone,
        accept_reply_all=row.accept_reply_all,
    )


@dataclass(frozen=True)
class AccountSettings:
    """What filing reads of an account: its id and the two settings `decide` and
    `apply_plan` follow. Read with the owner (`owners`), not as an ORM `Account`: an ORM
    load per transaction costs more CPU than the query."""

    id: int
    file_under_companies: bool
    discard_automated: bool


_USERS, _ACCOUNTS, _EXTRA = User.__table__.c, Account.__table__.c, UserAddress.__table__.c
_OWNERS = (
    select(
        _USERS.id,
        _USERS.name,
        _USERS.email,
        _USERS.timezone,
        _USERS.accept_reply_all,
        _ACCOUNTS.id.label("account_id"),
        _ACCOUNTS.file_under_companies,
        _ACCOUNTS.discard_automated,
        _EXTRA.email.label("extra"),
        _EXTRA.verified,
    )
    .select_from(
        User.__table__.join(Account.__table__, _ACCOUNTS.id == _USERS.account_id).outerjoin(
            UserAddress.__table__, _EXTRA.user_id == _USERS.id
        )
    )
    .where(_USERS.id.in_(bindparam("users", expanding=True)))
)


def owners(session: Session, user_ids: list[int]) -> dict[int, tuple[UserInfo, AccountSettings]]:
    """Dropbox owners and their accounts as filing sees them, one Core query for a batch
    (it took four per owner: the user and the account as ORM objects, the user's row and
    their additional addresses). An unknown id is left out."""
    found: dict[int, list[Any]] = {}
    for row in session.connection().execute(_OWNERS, {"users": user_ids}):
        found.setdefault(row.id, []).append(row)
    return {user_id: _owner(rows) for user_id, rows in found.items()}


def _owner(rows: list[Any]) -> tuple[UserInfo, AccountSettings]:
    first = rows[0]
    account = AccountSettings(first.account_id, first.file_under_companies, first.discard_automated)
    return _user_info(rows), account


_ACCOUNT_SETTINGS = select(
    _ACCOUNTS.id, _ACCOUNTS.file_under_companies, _ACCOUNTS.discard_automated
).where(_ACCOUNTS.id == bindparam("account"))


def account_settings(session: Session, account_id: int) -> AccountSettings | None:
    """An account's filing settings (None: no such account), without an ORM load."""
    row = session.connection().execute(_ACCOUNT_SETTINGS, {"account": account_id}).first()
    return None if row is None else AccountSettings(*row)
