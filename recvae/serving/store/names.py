"""Names of the store's tables, view and schema: validated identifiers, the only text ever put into SQL."""

from __future__ import annotations

import re
from dataclasses import dataclass

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class IdentifierError(ValueError):
    """A configured table/schema name is not a plain SQL identifier."""


def validate_identifier(name: str, what: str = "identifier") -> str:
    """`name` if it is a plain identifier (letters, digits, underscore; 63 chars at most), else IdentifierError."""
    if not isinstance(name, str) or not IDENTIFIER_RE.fullmatch(name):
        raise IdentifierError(
            f"{what} {name!r} is not a plain SQL identifier (must match {IDENTIFIER_RE.pattern})"
        )
    return name


def quote(name: str) -> str:
    """A double-quoted identifier; only ever called on validated names, which cannot contain a quote."""
    return f'"{name}"'


OUTPUT_TABLES = ("output_batches", "user_anomalies", "anomaly_interactions", "user_embeddings", "similar_items")


@dataclass(frozen=True)
class TableNames:
    """Names of the store's tables and view, and an optional PostgreSQL schema; all validated identifiers."""

    batches: str = "recvae_batches"
    shards: str = "recvae_batch_shards"
    recommendations: str = "recvae_recommendations"
    items: str = "recvae_items"
    current_view: str = "recvae_current_recommendations"
    schema: str | None = None
    # what the model says beyond the lists (recvae.serving.store.outputs): their own batches, one current per kind
    output_batches: str = "recvae_output_batches"
    user_anomalies: str = "recvae_user_anomalies"
    anomaly_interactions: str = "recvae_anomaly_interactions"
    user_embeddings: str = "recvae_user_embeddings"
    similar_items: str = "recvae_similar_items"

    def __post_init__(self) -> None:
        for f in ("batches", "shards", "recommendations", "items", "current_view", *OUTPUT_TABLES):
            validate_identifier(getattr(self, f), f"table name {f}")
        if self.schema is not None:
            validate_identifier(self.schema, "schema name")
        names = [self.batches, self.shards, self.recommendations, self.items, self.current_view,
                 *(getattr(self, f) for f in OUTPUT_TABLES)]
        if len(set(names)) != len(names):
            raise IdentifierError(f"table and view names must differ; got {names}")
        validate_identifier(self.batches_published_idx, "derived index name (shorten the batches table name)")
        validate_identifier(self.output_batches_published_idx, "derived index name (shorten output_batches)")

    @property
    def batches_published_idx(self) -> str:
        """Name of the partial unique index that allows one published batch."""
        return f"{self.batches}_published"

    @property
    def output_batches_published_idx(self) -> str:
        """Name of the partial unique index that allows one published output batch per kind."""
        return f"{self.output_batches}_published"

    def qualified(self, name: str) -> str:
        """Quoted (schema-qualified) name for SQL text."""
        return f"{quote(self.schema)}.{quote(name)}" if self.schema else quote(name)

    def placeholders(self) -> dict[str, str]:
        """Template values for the SQL files: quoted names of every object."""
        return {
            "batches": self.qualified(self.batches),
            "shards": self.qualified(self.shards),
            "recommendations": self.qualified(self.recommendations),
            "items": self.qualified(self.items),
            "current_view": self.qualified(self.current_view),
            # CREATE INDEX takes a bare name; PostgreSQL puts the index in its table's schema.
            "batches_published_idx": quote(self.batches_published_idx),
            **{f: self.qualified(getattr(self, f)) for f in OUTPUT_TABLES},
            "output_batches_published_idx": quote(self.output_batches_published_idx),
        }
