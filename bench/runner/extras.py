"""Experiments beside the request table: snapshot sync, revocation, keyd verify and issue."""

from __future__ import annotations

from .context import Unavailable

def _pending(ctx, a, log):
    raise Unavailable("not written yet")


RUN = {"sync": _pending, "revocation": _pending, "verify": _pending, "issue": _pending}


def render(name: str, result: dict) -> list[str]:
    return []
