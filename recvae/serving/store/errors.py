"""The store's error type, and scrubbing passwords out of driver messages."""

from __future__ import annotations

from collections.abc import Sequence


class StoreError(RuntimeError):
    """A recommendation-store operation failed; messages never contain a password."""


def scrub(message: str, secrets: Sequence[str]) -> str:
    """`message` without the URL's password(s) in it (drivers rarely echo them, but never trust that)."""
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message
