"""Mail with a one-time link: password reset, invitation, additional-address check.

Each issues a token (`store.users.issue_token`: only its hash is kept), builds the message
from a template, and queues it in the outbox in the caller's transaction; the reply sender
delivers it through the relay like any reply. Web pages and the CLI call these alike.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from crmdrop.config import Settings
from crmdrop.outbound.replies import build_reply
from crmdrop.store.accounts import get_user, now
from crmdrop.store.models import Account, TokenKind, User
from crmdrop.store.outbox import queue_account_mail
from crmdrop.store.users import issue_token, user_by_email

RESET_TTL = timedelta(hours=1)
INVITE_TTL = timedelta(days=7)
ADDRESS_TTL = timedelta(hours=48)
MAILS_PER_HOUR = 5  # of one kind, per user: a reset form must not flood an inbox


def _queue(
    session: Session,
    settings: Settings,
    user: User,
    *,
    to: str,
    kind: TokenKind,
    subject: str,
    **values: object,
) -> None:
    at = now()
    raw = build_reply(
        template={"reset": "password_reset", "invite": "invite", "address": "verify_address"}[kind],
        subject=subject,
        sender=settings.reply_sender,
        to=to,
        in_reply_to=None,
        now=at,
        auto_submitted="auto-generated",
        user_name=user.name,
        email=user.email,
        **values,
    )
    queue_account_mail(
        session,
        account_id=user.account_id,
        user_id=user.id,
        kind=f"link:{kind}",
        mail_to=to,
        raw=raw,
        now=at,
        per_hour=MAILS_PER_HOUR,
    )


def send_password_reset(session: Session, settings: Settings, email: str) -> bool:
    """Mail a reset link to an active user; False (and nothing sent) for anyone else."""
    user = user_by_email(session, email)
    if user is None or not user.active:
        return False
    token = issue_token(session, user.id, TokenKind.RESET, ttl=RESET_TTL)
    link = f"{settings.web_url}/password/reset/{token}"
    _queue(
        session, settings, user, to=user.email, kind=TokenKind.RESET,
        subject="Reset your crmdrop password", link=link,
    )  # fmt: skip
    return True


def send_invite(session: Session, settings: Settings, user: User, *, inviter: str) -> None:
    """Mail an invited colleague the link that lets them set their password."""
    account = session.get(Account, user.account_id)
    assert account is not None
    token = issue_token(session, user.id, TokenKind.INVITE, ttl=INVITE_TTL)
    _queue(
        session, settings, user, to=user.email, kind=TokenKind.INVITE,
        subject=f"{inviter} invites you to crmdrop", link=f"{settings.web_url}/invite/{token}",
        inviter=inviter, account=account.name, days=INVITE_TTL.days,
    )  # fmt: skip


def send_address_check(session: Session, settings: Settings, user_email: str, address: str) -> None:
    """Mail a validation link to one of the user's additional addresses."""
    user = get_user(session, user_email)
    token = issue_token(session, user.id, TokenKind.ADDRESS, ttl=ADDRESS_TTL, address=address)
    _queue(
        session, settings, user, to=address, kind=TokenKind.ADDRESS,
        subject="Confirm your email address for crmdrop", address=address,
        link=f"{settings.web_url}/settings/dropbox/verify/{token}",
        hours=int(ADDRESS_TTL.total_seconds() // 3600),
    )  # fmt: skip
