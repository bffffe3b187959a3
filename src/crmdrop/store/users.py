"""Users as the web app and the API see them: sign-in lookups, sessions, roles.

The password itself is never checked here (hashing is slow and belongs off the event loop,
see `crmdrop.passwords`); the store only hands out and stores hashes.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crmdrop.mail.addresses import normalize_address
from crmdrop.store.accounts import Missing, StoreError, add_user, now, verify_address
from crmdrop.store.models import (
    Account,
    RevokedAttempt,
    Role,
    TokenKind,
    User,
    UserAddress,
    UserToken,
)

LINK_INVALID = "This link has expired or was already used."


@dataclass(frozen=True)
class SessionUser:
    """The signed-in user of a request: what `web.auth.current_user` returns.

    `epoch` is the user's session epoch when the session was made; a password change or a
    deactivation bumps the stored one, which ends every older session.
    """

    id: int
    account_id: int
    account_name: str
    email: str
    name: str
    role: Role
    timezone: str
    epoch: int

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class Credentials:
    """What a login attempt needs: the stored hash and whether the user may sign in."""

    user_id: int
    password_hash: str | None
    active: bool
    epoch: int


def credentials(session: Session, email: str) -> Credentials | None:
    """The sign-in record for a signup address, or None when there is no such user."""
    user = session.scalar(select(User).where(User.email == normalize_address(email)))
    if user is None:
        return None
    return Credentials(user.id, user.password_hash, user.active, user.session_epoch)


def session_user(session: Session, user_id: int, epoch: int) -> SessionUser | None:
    """The user behind a session, or None when the session no longer holds (gone,
    deactivated, or the password changed since)."""
    row = session.execute(
        select(User, Account.name)
        .join(Account, Account.id == User.account_id)
        .where(User.id == user_id)
    ).one_or_none()
    if row is None:
        return None
    user, account_name = row
    if not user.active or user.session_epoch != epoch:
        return None
    return SessionUser(
        id=user.id,
        account_id=user.account_id,
        account_name=account_name,
        email=user.email,
        name=user.name,
        role=Role(user.role),
        timezone=user.timezone,
        epoch=user.session_epoch,
    )


def set_password(session: Session, user_id: int, password_hash: str) -> int:
    """Store a new hash and end the user's other sessions; the new session epoch."""
    user = session.get(User, user_id)
    if user is None:
        raise StoreError("no such user")
    user.password_hash = password_hash
    user.session_epoch += 1
    session.flush()
    return user.session_epoch


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_token(
    session: Session,
    user_id: int,
    kind: TokenKind,
    *,
    ttl: timedelta,
    address: str | None = None,
) -> str:
    """A one-time link token (returned once, to be mailed); only its SHA-256 is stored.

    A new token of the same kind (and address) replaces older unused ones.
    """
    at = now()
    session.execute(
        update(UserToken)
        .where(
            UserToken.user_id == user_id,
            UserToken.kind == kind,
            UserToken.address.is_(address) if address is None else UserToken.address == address,
            UserToken.used_at.is_(None),
        )
        .values(used_at=at)
    )
    raw = secrets.token_urlsafe(32)
    session.add(
        UserToken(
            user_id=user_id,
            kind=kind,
            token_hash=_digest(raw),
            address=address,
            created_at=at,
            expires_at=at + ttl,
        )
    )
    session.flush()
    return raw


def peek_token(session: Session, raw: str, kind: TokenKind) -> UserToken | None:
    """The live token (unused, unexpired) for a link, without using it up."""
    token = session.scalar(
        select(UserToken).where(UserToken.token_hash == _digest(raw), UserToken.kind == kind)
    )
    if token is None or token.used_at is not None or token.expires_at <= now():
        return None
    return token


def redeem_token(session: Session, raw: str, kind: TokenKind) -> UserToken:
    """Use a link's token up (once), or StoreError(LINK_INVALID)."""
    token = peek_token(session, raw, kind)
    if token is None:
        raise StoreError(LINK_INVALID)
    token.used_at = now()
    session.flush()
    return token


class UserStatus(StrEnum):
    ACTIVE = "active"
    INVITED = "invited"  # no password set yet; the dropbox is not live
    DEACTIVATED = "deactivated"


@dataclass(frozen=True)
class UserRow:
    """A user as the admin's user list shows them."""

    id: int
    email: str
    name: str
    role: Role
    status: UserStatus


def _status(user: User) -> UserStatus:
    if user.active:
        return UserStatus.ACTIVE
    return UserStatus.INVITED if user.password_hash is None else UserStatus.DEACTIVATED


def list_users(session: Session, account_id: int) -> list[UserRow]:
    users = session.scalars(select(User).where(User.account_id == account_id).order_by(User.id))
    return [UserRow(u.id, u.email, u.name, Role(u.role), _status(u)) for u in users]


def account_user(session: Session, account_id: int, user_id: int) -> User:
    """A user of this account; `Missing` for anyone else's (the page answers 404)."""
    user = session.get(User, user_id)
    if user is None or user.account_id != account_id:
        raise Missing("no such user in this account")
    return user


def invite_user(session: Session, account_id: int, email: str, name: str) -> User:
    """A colleague in the admin's account, inactive until they accept and set a password."""
    account = session.get(Account, account_id)
    if account is None:
        raise Missing("no such account")
    user = add_user(session, email, name=name or email.partition("@")[0], account=account.name)
    user.active = False
    session.flush()
    return user


def accept_invite(session: Session, raw: str, password_hash: str) -> User:
    """The invited user sets a password: active from now on, dropbox live."""
    token = redeem_token(session, raw, TokenKind.INVITE)
    user = session.get(User, token.user_id)
    if user is None or user.password_hash is not None:
        raise StoreError(LINK_INVALID)
    user.password_hash = password_hash
    user.active = True
    user.session_epoch += 1
    session.flush()
    return user


def set_active(session: Session, account_id: int, user_id: int, active: bool, *, by: int) -> User:
    """Deactivate (sessions end, dropbox refused at RCPT at once) or reactivate a user."""
    user = account_user(session, account_id, user_id)
    if user.id == by:
        raise StoreError("You cannot deactivate yourself.")
    if active and user.password_hash is None:
        raise StoreError(f"{user.email} has not accepted the invitation yet.")
    user.active = active
    user.session_epoch += 1
    session.flush()
    return user


def set_role(session: Session, account_id: int, user_id: int, role: Role, *, by: int) -> User:
    user = account_user(session, account_id, user_id)
    if user.id == by and role is not Role.ADMIN:
        raise StoreError("You cannot take away your own admin role.")
    user.role = role
    session.flush()
    return user


@dataclass(frozen=True)
class ExtraAddress:
    email: str
    verified: bool


@dataclass(frozen=True)
class RevokedUse:
    at: datetime
    mail_from: str
    rcpt_to: str


@dataclass(frozen=True)
class DropboxSettings:
    """What /settings/dropbox shows of a user."""

    token: str
    signup_email: str
    addresses: list[ExtraAddress]
    accept_reply_all: bool
    timezone: str
    revoked_uses: list[RevokedUse]


def dropbox_settings(session: Session, user_id: int, *, recent: int = 20) -> DropboxSettings:
    user = session.get(User, user_id)
    if user is None:
        raise Missing("no such user")
    extras = session.scalars(
        select(UserAddress).where(UserAddress.user_id == user_id).order_by(UserAddress.email)
    )
    uses = session.scalars(
        select(RevokedAttempt)
        .where(RevokedAttempt.user_id == user_id)
        .order_by(RevokedAttempt.at.desc(), RevokedAttempt.id.desc())
        .limit(recent)
    )
    return DropboxSettings(
        token=user.token,
        signup_email=user.email,
        addresses=[ExtraAddress(e.email, e.verified) for e in extras],
        accept_reply_all=user.accept_reply_all,
        timezone=user.timezone,
        revoked_uses=[RevokedUse(u.at, u.mail_from, u.rcpt_to) for u in uses],
    )


def user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalize_address(email)))


def confirm_address(session: Session, raw: str) -> UserAddress:
    """The link of an address check was opened: that address is verified (SPEC §1.2)."""
    token = redeem_token(session, raw, TokenKind.ADDRESS)
    user = session.get(User, token.user_id)
    if user is None or token.address is None:
        raise StoreError(LINK_INVALID)
    return verify_address(session, user.email, token.address)


def reset_password(session: Session, raw: str, password_hash: str) -> User:
    """A reset link was used: the new password holds, every old session ends."""
    token = redeem_token(session, raw, TokenKind.RESET)
    user = session.get(User, token.user_id)
    if user is None or not user.active:
        raise StoreError(LINK_INVALID)
    set_password(session, user.id, password_hash)
    return user


@dataclass(frozen=True)
class Invited:
    email: str
    name: str
    account_name: str


def invited_user(session: Session, user_id: int) -> Invited | None:
    """Who an invitation is for, while it is still pending."""
    row = session.execute(
        select(User, Account.name)
        .join(Account, Account.id == User.account_id)
        .where(User.id == user_id)
    ).one_or_none()
    if row is None or row[0].password_hash is not None:
        return None
    return Invited(row[0].email, row[0].name, row[1])
