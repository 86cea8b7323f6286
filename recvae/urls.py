"""Database URLs made safe to show: the one place that masks passwords (store, readers and the CLI use it), and the
file behind a SQLite URL."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy.engine import URL

PASSWORD_KEYS = ("password", "passwd", "pwd", "pass", "sslpassword")
MASK = "***"
# The scheme ends at the first "://" (whatever precedes it, so even "not a url://..." keeps its user name).
_SCHEME_RE = re.compile(r"^.*?://")
# password=... in a query string or a libpq key=value string; the value runs to the next '&' or space.
_QUERY_PW_RE = re.compile(r"(?i)(^|[?&;\s])(" + "|".join(PASSWORD_KEYS) + r")=([^&\s]*)")


# In free text (log lines, error messages): scheme://user:PASSWORD@host as SQLAlchemy parses it (the password runs
# to the last '@' before any space), and password=... in a query string or a libpq DSN.
_TEXT_URL_PASSWORD_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@]*@")
_TEXT_KEY_PASSWORD_RE = re.compile(r"(?i)\b((?:" + "|".join(PASSWORD_KEYS) + r")=)[^&\s'\"]*")


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL in it (user:password@ or password=...) replaced by ***."""
    if "@" not in text and "=" not in text:  # the common case: nothing to look for
        return text
    return _TEXT_KEY_PASSWORD_RE.sub(rf"\1{MASK}", _TEXT_URL_PASSWORD_RE.sub(rf"\1{MASK}@", text))


def _text(url: str | URL) -> str:
    return url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)


def _split_userinfo(rest: str) -> tuple[str, str] | None:
    """(user, password) of `rest` (a URL without its scheme), or None when it has no user:password@ part.

    The userinfo ends at the last '@' before the query string, so a password holding '@', ':' or '/' is masked
    whole; when that part has no '@', the last '@' anywhere (a password holding '?')."""
    head, sep, _ = rest.partition("?")
    at = head.rfind("@")
    if at < 0 and sep:
        at = rest.rfind("@")
    if at < 0:
        return None
    user, colon, password = rest[:at].partition(":")
    return (user, password) if colon else None


def url_secrets(url: str | URL | None) -> list[str]:
    """The password(s) in `url` as written (userinfo and password=... query values), to scrub from messages."""
    if url is None:
        return []
    s = _text(url)
    m = _SCHEME_RE.match(s)
    parts = _split_userinfo(s[m.end():] if m else s)
    found = [parts[1]] if parts and parts[1] else []
    found += [q.group(3) for q in _QUERY_PW_RE.finditer(s) if q.group(3)]
    return list(dict.fromkeys(found + [unquote(f) for f in found]))  # as written and percent-decoded


def mask_url(url: str | URL | None) -> str:
    """`url` with every password (user:password@, password=... in the query) replaced by ***, safe to log.

    Works on malformed URLs too (no scheme, an unencoded '@' or ':' in the password): it never parses the URL."""
    if url is None:
        return "<no url>"
    s = _text(url)
    m = _SCHEME_RE.match(s)
    prefix, rest = (s[: m.end()], s[m.end():]) if m else ("", s)
    parts = _split_userinfo(rest)
    if parts is not None:
        user, password = parts
        rest = f"{user}:{MASK}{rest[len(user) + 1 + len(password):]}"
    return _QUERY_PW_RE.sub(lambda q: f"{q.group(1)}{q.group(2)}={MASK}", prefix + rest)


SQLITE_PREFIX = "sqlite:///"


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URL (`sqlite:////abs/path` is absolute); None for any other URL."""
    return Path(url[len(SQLITE_PREFIX):]) if url.startswith(SQLITE_PREFIX) else None
