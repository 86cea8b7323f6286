"""Options several commands share, defined once: the recommendations database and a write's batch key."""

from __future__ import annotations

import argparse
import uuid


def add_db_option(p: argparse.ArgumentParser) -> None:
    """--db URL (the default is resolved when used, so parsing creates nothing)."""
    p.add_argument("--db", metavar="URL", help="SQLAlchemy URL (default: $RECVAE_DB_URL, else SQLite under .recvae)")


def add_batch_key_option(p: argparse.ArgumentParser) -> None:
    """--batch-key KEY: the idempotency key of a published write."""
    p.add_argument("--batch-key", help="idempotency key: the same key never writes twice (default: a new one)")


def db_url(args: argparse.Namespace) -> str:
    """--db, else $RECVAE_DB_URL, else the SQLite database under the home."""
    from recvae.paths import default_db_url

    return args.db or default_db_url()


def batch_key(args: argparse.Namespace) -> str:
    """--batch-key, else a new key for this command's write."""
    return args.batch_key or f"cli-{uuid.uuid4().hex[:12]}"
