"""The `recvae` command line: the parser built from each layer's commands, and one `error:` line for bad input."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from recvae.cli.analysis import (
    add_anomalies,
    add_embeddings,
    add_similar_items,
    cmd_anomalies,
    cmd_embeddings,
    cmd_similar_items,
)
from recvae.cli.data import add_download, add_prepare, cmd_download, cmd_prepare
from recvae.cli.job import add_pipeline, cmd_pipeline
from recvae.cli.models import (
    add_baseline,
    add_compare,
    add_ensemble,
    add_evaluate,
    add_promote,
    add_train,
    cmd_baseline,
    cmd_compare,
    cmd_ensemble,
    cmd_evaluate,
    cmd_promote,
    cmd_train,
)
from recvae.cli.serving import add_db, add_recommend, cmd_db, cmd_recommend
from recvae.cli.tune import add_tune, cmd_tune
from recvae.log import mask_secrets, parse_level, setup_logging

logger = logging.getLogger(__name__)


EXIT_USAGE = 2  # bad input or arguments: one-line message, no traceback (unless --log-level DEBUG)


EXIT_INTERNAL = 70  # an unexpected internal error (sysexits' EX_SOFTWARE): traceback kept, labelled as a bug


def _reported_errors() -> tuple[type[BaseException], ...]:
    """Errors that end in one `error:` line: the user's, and faults of a service (recvae.errors)."""
    from recvae.errors import fault_errors, user_errors

    return (*user_errors(), *fault_errors())


Command = tuple[Callable[[Any], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]


COMMANDS: list[Command] = [
    (add_prepare, cmd_prepare),
    (add_train, cmd_train),
    (add_tune, cmd_tune),
    (add_baseline, cmd_baseline),
    (add_ensemble, cmd_ensemble),
    (add_evaluate, cmd_evaluate),
    (add_compare, cmd_compare),
    (add_promote, cmd_promote),
    (add_recommend, cmd_recommend),
    (add_db, cmd_db),
    (add_anomalies, cmd_anomalies),
    (add_embeddings, cmd_embeddings),
    (add_similar_items, cmd_similar_items),
    (add_download, cmd_download),
    (add_pipeline, cmd_pipeline),
]


def _level(text: str) -> int:
    try:
        return parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class _Subparsers:
    """Adds the global options to every command, so `--log-level` works before or after the command name."""

    def __init__(self, actions: Any, common: argparse.ArgumentParser) -> None:
        self._actions = actions
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("parents", [])
        kwargs["parents"] = [*kwargs["parents"], self._common]
        return self._actions.add_parser(name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered command."""
    parser = argparse.ArgumentParser(prog="recvae", description="Mult-VAE recommender pipeline")
    parser.add_argument("--log-level", type=_level, default=os.environ.get("RECVAE_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO (default), WARNING or ERROR; DEBUG also shows tracebacks")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", type=_level, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    subparsers = _Subparsers(parser.add_subparsers(dest="command", metavar="COMMAND"), common)
    for add, run in COMMANDS:
        add(subparsers).set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with a one-line message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level if isinstance(args.log_level, int) else _level(args.log_level)
    setup_logging(level)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except _reported_errors() as exc:
        if level <= logging.DEBUG:
            raise
        message = mask_secrets(" ".join(str(exc).split())) or type(exc).__name__
        print(f"recvae {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("recvae: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, not bad input: keep the traceback for the report, and say so
        logger.exception("unexpected internal error")
        print(f"recvae {args.command}: internal error (a bug in recvae, not in your input): the traceback above "
              "belongs in a bug report", file=sys.stderr)
        return EXIT_INTERNAL


