"""Logging set-up and progress bars (tqdm) that stay quiet in logs and CI."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_HANDLER_NAME = "recvae-stderr"


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
    """Send log records of `level` and above to stderr; calling it again only changes the level."""
    lvl = parse_level(level)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
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
