"""Secrets out of URLs before they reach MLflow (params, artifacts), logs or the report.

A tracking URI such as `postgresql://mlflow:s3cret@db/mlflow` or a teacher endpoint with `?api_key=...` is
configuration we want recorded, minus the credential. Userinfo (`user:password@`) is replaced as a whole, since
a user name can be a token too; query parameters whose name says secret have their value replaced.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fsa_distill.core.urls import parse_url

REDACTED = "***"
# Query parameter names that carry credentials (lower-cased, compared by substring).
SECRET_PARAMETER_HINTS = ("password", "passwd", "pwd", "secret", "token", "key", "auth", "signature", "sig",
                          "credential", "session")
# A URL inside a message: up to the last `@` before white space (a quote or `>` may sit inside a password),
# then up to a quote or bracket that ends it (`'postgresql://u:p@db/x'` keeps its closing quote).
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://(?:\S*@)?[^\s'\"<>]*")


def _secret_parameter(name: str) -> bool:
    lowered = name.lower()
    return lowered in ("pass", "pw") or any(hint in lowered for hint in SECRET_PARAMETER_HINTS)


def redact_url(url: str) -> str:
    """`url` without userinfo and with secret query values replaced by ***; text that is not a URL unchanged.

    Cut by `core.urls.parse_url`: the userinfo ends at the last `@`, so raw `#/?@` in a password stay hidden."""
    parts = parse_url(url)
    if parts is None:
        return url
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_parameter(name) for name, _ in pairs):
            query = urlencode([(name, REDACTED if _secret_parameter(name) else value) for name, value in pairs],
                              safe="*")
    if parts.userinfo is None and query == parts.query:
        return url
    return parts.unparse(REDACTED if parts.userinfo is not None else None, query)


def redact_text(text: str) -> str:
    """Every URL inside a free text (an error message, a log line) redacted."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text) if "://" in text else text


def redact_secrets(value: Any) -> Any:
    """A copy of a JSON-like tree (a dumped config) with every URL inside its strings redacted."""
    if isinstance(value, dict):
        return {key: redact_secrets(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_webhook(url: str) -> str:
    """A webhook URL as `scheme://host/***`: its path and query are the credential (Slack, Discord and Teams
    put the token in the path), so only where it goes is shown."""
    parts = parse_url(url)
    if parts is None:
        return REDACTED
    where = f"{parts.scheme}://{parts.host}"  # the userinfo, if any, is left out
    return f"{where}/{REDACTED}" if parts.path.strip("/") or parts.query or parts.fragment else where


def redact_typed_value(value: Any) -> Any:
    """A config value as a user typed it, for an error message: URLs redacted, and in a string that is no URL
    but holds an `@` (a mistyped one, `postgresql:u:pw@db`) everything up to the last `@` hidden too."""
    value = redact_secrets(value)
    if isinstance(value, str) and "@" in value and "://" not in value:
        return f"{REDACTED}@{value.rsplit('@', 1)[1]}"
    return value
