"""Settings pages: the user's email dropbox (/settings/dropbox) and, for admins, the
account's business preferences (/settings/account)."""

from __future__ import annotations

from fastapi import APIRouter

from crmdrop.web.common import redirect

router = APIRouter(prefix="/settings")


@router.get("")
def settings_home() -> object:
    return redirect("/settings/dropbox")
