"""Accounts, users, their addresses and exclusion lists (SPEC §1, §2.3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from crmdrop.dropbox.address import new_token
from crmdrop.dropbox.plan import UserInfo
from crmdrop.mail.addresses import is_plausible_address, normalize_address, normalize_domain
from crmdrop.store.models import Account, Company, CompanyEmail, Exclusion, User, UserAddress


class StoreError(ValueError):
    """A request the store refuses, with a message meant for the person who asked."""


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
    """Sign a user up in `account` (created if new), with a fresh dropbox token."""
    address = _check_address(email)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise StoreError(f"unknown time zone {timezone!r}") from exc
    if _address_owner(session, address) is not None:
        raise StoreError(f"{address} already belongs to a user")
    acc = get_or_create_account(session, account)
    user = User(
        account_id=acc.id,
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
    if owner is not None:
        raise StoreError(f"{normalized} already belongs to user {owner.email}")
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
        if "." not in domain:
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
    """A new token at once; the six old addresses stop working (SPEC §2.3)."""
    user = get_user(session, user_email)
    user.token = new_token()
    session.flush()
    return user


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
    .where(User.token == bindparam("token"))
)


def dropbox_owner(conn: Connection | Session, token: str) -> tuple[Recipient, UserInfo] | None:
    """The owner of a live token and what the sender check needs of them.

    One joined query on a plain connection: it runs at every RCPT.
    """
    rows = conn.execute(_OWNER_BY_TOKEN, {"token": token}).all()
    if not rows:
        return None
    first = rows[0]
    extras = [(r.extra, r.verified) for r in rows if r.extra is not None]
    info = UserInfo(
        id=first.id,
        name=first.name,
        signup_email=first.email,
        addresses=frozenset([first.email, *(e for e, _ in extras)]),
        verified=frozenset([first.email, *(e for e, v in extras if v)]),
        timezone=first.timezone,
        accept_reply_all=first.accept_reply_all,
    )
    return Recipient(user_id=first.id, account_id=first.account_id, user_email=first.email), info


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
