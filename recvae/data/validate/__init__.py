"""Checks on raw interaction columns: errors that name file, line/row and column, or lenient quarantine.

validator: DataValidationError, the Validator that collects bad rows, Positions; quarantine: writing them;
columns: arrow columns -> checked interactions; duplicates: repeated (user, item) pairs; arrays: helpers.
"""

from recvae.data.validate.arrays import integer_text_only
from recvae.data.validate.columns import COLUMNS, ColumnChecker, build_interactions
from recvae.data.validate.duplicates import DUPLICATE_RULES, has_repeats, pair_keys, resolve_duplicates
from recvae.data.validate.quarantine import write_quarantine
from recvae.data.validate.validator import DataValidationError, Positions, ValidationReport, Validator

__all__ = [
    "COLUMNS",
    "DUPLICATE_RULES",
    "ColumnChecker",
    "DataValidationError",
    "Positions",
    "ValidationReport",
    "Validator",
    "build_interactions",
    "has_repeats",
    "integer_text_only",
    "pair_keys",
    "resolve_duplicates",
    "write_quarantine",
]
