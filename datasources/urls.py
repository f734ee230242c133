"""URLs as the HTTP layer sees them: mirrors, redaction of secrets, joining and preparing.

Split from :mod:`datasources.http` so the client reads as the request/download logic alone.
API keys travel in query strings, so every URL or message that reaches a log or an exception
passes through :func:`safe_url`, :func:`redact` or :func:`describe` first.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import requests
from requests.models import PreparedRequest

#: Key of a mirror spec that applies to every URL (a spec without ``PREFIX=``).
WILDCARD = "*"


def parse_mirrors(spec: str | None) -> dict[str, str]:
    """Parse a mirror spec such as the value of ``KG4REC_MIRROR``.

    ``"PREFIX=TARGET;PREFIX2=TARGET2"`` maps URL prefixes to targets (base URL, ``file://`` URL or
    local directory). A spec without any ``=`` is a single target used for *every* URL and is
    returned under the key ``"*"``. Empty or ``None`` gives ``{}``. Entries are separated by ``;``
    or newlines; surrounding whitespace is ignored. Only the first ``=`` of an entry splits it, so
    targets may contain ``=``.
    """
    if spec is None or not spec.strip():
        return {}
    entries = [e.strip() for e in re.split(r"[;\n]", spec) if e.strip()]
    if len(entries) == 1 and "=" not in entries[0]:
        return {WILDCARD: entries[0]}
    mirrors: dict[str, str] = {}
    for entry in entries:
        prefix, sep, target = entry.partition("=")
        prefix, target = prefix.strip(), target.strip()
        if not sep or not prefix or not target:
            raise ValueError(
                f"bad mirror entry {entry!r}: expected PREFIX=TARGET (entries separated by ';')"
            )
        mirrors[prefix] = target
    return mirrors


def safe_url(url: str) -> str:
    """Return ``url`` fit for logs and error messages.

    Query *values* and any ``user:password@`` are replaced by ``***`` (API keys travel in query
    parameters); parameter names and the fragment-less path are kept because they help debugging.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    query = "&".join(f"{key}=***" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    if parts.query and not query:  # e.g. "?token" with no '=': hide it wholesale
        query = "***"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


QUERY_PAIR = re.compile(r"([?&][^=&\s'\"()<>]+=)[^&\s'\"()<>]*")


def redact(text: str, *urls: str) -> str:
    """Remove query values from free text (e.g. a urllib3 message that embeds the request URL)."""
    secrets: set[str] = set()
    for url in urls:
        with contextlib.suppress(ValueError):
            for _, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
                if len(value) >= 4:  # short values ("1", "en") are not secrets and are common words
                    secrets.add(value)
            raw_query = urlsplit(url).query
            if raw_query:
                secrets.add(raw_query)
    # Longest first so a whole query string is replaced before its parts.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
        quoted = requests.utils.quote(secret, safe="")
        if quoted != secret:
            text = text.replace(quoted, "***")
    return QUERY_PAIR.sub(r"\1***", text)


class RedactQueryFilter(logging.Filter):
    """Strip query values from urllib3's own log records.

    urllib3 logs retries ("Retrying (...) after connection broken by ...: /api?apikey=...") and,
    at DEBUG, every request line - with the query string, where API keys travel. A filter on a
    logger only sees records created by that logger, hence one per urllib3 module logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = QUERY_PAIR.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


URLLIB3_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
)


def install_log_redaction() -> None:
    """Idempotently attach :class:`RedactQueryFilter` to urllib3's loggers."""
    for name in URLLIB3_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
            logger.addFilter(RedactQueryFilter())


def has_scheme(value: str) -> bool:
    """True for ``scheme://...`` URLs; false for plain paths (including ``C:\\x`` on Windows)."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", value)) and "://" in value


def join_target(target: str, rest: str) -> str:
    """Join a mirror target and the remainder of a URL with exactly one ``/``."""
    base = target if has_scheme(target) else Path(target).expanduser().resolve().as_uri()
    if not rest:
        return base
    return base.rstrip("/") + "/" + rest.lstrip("/")


def with_params(url: str, params: Any) -> str:
    """The URL ``requests`` will actually send (so its query values can be redacted)."""
    if not params:
        return url
    prepared = PreparedRequest()
    try:
        prepared.prepare_url(url, params)
    except Exception:  # unpreparable URL: the request itself will fail and say why
        return url
    return prepared.url or url


def describe(exc: BaseException, *urls: str) -> str:
    """A one-line, query-free description of a network exception."""
    return f"{type(exc).__name__}: {redact(str(exc), *urls)}"
