"""Logging set-up and progress bars (tqdm) that stay quiet in logs and CI."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

from recvae.urls import mask_secrets

T = TypeVar("T")
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_HANDLER_NAME = "recvae-stderr"


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask URL passwords in a log record's message (formatted with its args) and traceback text, in place."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: logging reports it when it formats the record
        return record
    masked = mask_secrets(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = mask_secrets(record.exc_text)
    return record


class MaskSecretsFilter(logging.Filter):
    """A handler filter that masks URL passwords in every record it passes (see `mask_record`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record)
        return True


def install_secret_masking() -> None:
    """Mask URL passwords in every log record this process creates, whatever handler writes it (ours, Airflow's
    task log, a file). A filter on a logger would miss records of its child loggers, and one on a handler misses
    handlers added later, so the masking wraps the record factory (once)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "masks_secrets", False):
        return

    def masking_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return mask_record(factory(*args, **kwargs))

    masking_factory.masks_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masking_factory)


def parse_level(level: int | str) -> int:
    """A logging level from a number or a name such as 'info' or 'DEBUG'."""
    if isinstance(level, int):
        return level
    text = str(level).strip().upper()
    if text.isdigit():
        return int(text)
    value = logging.getLevelName(text)
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def setup_logging(level: int | str = "INFO") -> None:
    """Send log records of `level` and above to stderr, URL passwords masked; calling again only changes the level."""
    lvl = parse_level(level)
    install_secret_masking()
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler.addFilter(MaskSecretsFilter())  # records made before the factory was wrapped
        root.addHandler(handler)
    elif isinstance(handler, logging.StreamHandler) and handler.stream is not sys.stderr:
        with handler.lock or contextlib.nullcontext():  # not setStream: it flushes the old stream, maybe closed
            handler.stream = sys.stderr  # stderr was replaced since (a test's capture, a redirect): follow it
    root.setLevel(lvl)
    handler.setLevel(lvl)


def progress_disabled() -> bool:
    """True when TQDM_DISABLE is set (to anything but 0/false) or stderr is not a terminal."""
    flag = os.environ.get("TQDM_DISABLE", "").strip().lower()
    if flag and flag not in ("0", "false", "no", "off"):
        return True
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):
        return True


def progress(iterable: Iterable[T], **tqdm_kwargs: Any) -> Iterator[T]:
    """Wrap `iterable` in a tqdm bar on stderr unless progress bars are disabled."""
    tqdm_kwargs.setdefault("disable", progress_disabled())
    tqdm_kwargs.setdefault("leave", False)
    tqdm_kwargs.setdefault("file", sys.stderr)
    return iter(tqdm(iterable, **tqdm_kwargs))
