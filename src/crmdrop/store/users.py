"""Users as the web app and the API see them: sign-in lookups, sessions, roles.

The password itself is never checked here (hashing is slow and belongs off the event loop,
see `crmdrop.passwords`); the store only hands out and stores hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmdrop.mail.addresses import normalize_address
from crmdrop.store.accounts import StoreError
from crmdrop.store.models import Account, Role, User


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
