"""The one parser of the URLs the project takes: answer store, MLflow tracking URI, Prefect API, teacher endpoint.

Hand-written rather than `urllib.parse.urlsplit` or SQLAlchemy's `make_url`, because users type passwords raw:
in `postgresql://u:pa#ss/w?rd@db/x` urlsplit ends the authority at the `#`, so the `@` (and the password) lands
in the fragment, and a redaction built on it prints the password. Here the credentials end at the LAST `@` of
the URL: an `@` later in a path or query then over-redacts that URL, but a password never shows.
The scheme is compared case-insensitively and may carry a driver suffix (`postgresql+psycopg://`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote

from fsa_distill.core.errors import InputError

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_DIALECT_ALIASES = {"postgres": "postgresql"}
POSTGRES = "postgresql"
SQLITE = "sqlite"


@dataclass(frozen=True)
class URLParts:
    """A URL cut into the pieces redaction and backend choice need; every piece as written."""

    scheme: str  # as written, e.g. `PostgreSQL+psycopg`
    userinfo: str | None  # `user:password` (anything up to the last `@`), None without one
    host: str  # `host[:port]`, may be empty (`sqlite:////abs/path`)
    path: str
    query: str
    fragment: str

    @property
    def dialect(self) -> str:
        """Lower-cased scheme without its driver suffix, aliases folded: `postgres+psycopg` -> `postgresql`."""
        base = self.scheme.lower().split("+", 1)[0]
        return _DIALECT_ALIASES.get(base, base)

    def unparse(self, userinfo: str | None, query: str | None = None) -> str:
        """The URL again, with `userinfo` (None: none) and `query` (None: the original) substituted."""
        query = self.query if query is None else query
        text = f"{self.scheme}://{userinfo + '@' if userinfo is not None else ''}{self.host}{self.path}"
        return text + (f"?{query}" if query else "") + (f"#{self.fragment}" if self.fragment else "")


def parse_url(text: str) -> URLParts | None:
    """`text` cut into parts, or None when it does not start with `scheme://` (a plain path, a bare word)."""
    match = _SCHEME.match(text)
    if match is None:
        return None
    rest = text[match.end():]
    userinfo = None
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
    host_end = next((i for i, char in enumerate(rest) if char in "/?#"), len(rest))
    host, rest = rest[:host_end], rest[host_end:]
    rest, _, fragment = rest.partition("#")
    path, _, query = rest.partition("?")
    return URLParts(match.group(1), userinfo, host, path, query, fragment)


def is_postgres_url(location: str | Path) -> bool:
    """`postgresql://`, `postgres://`, any letter case, any driver suffix (`postgresql+psycopg://`)."""
    parts = parse_url(str(location))
    return parts is not None and parts.dialect == POSTGRES


def libpq_url(url: str) -> str:
    """The URL as libpq takes it: `postgresql://` in lower case, no driver suffix, user and password
    percent-encoded (libpq ends the userinfo at the first `@` and would send half a raw password as the host
    name, into its error message). Already-encoded parts (`p%40ss`) are decoded first, not encoded twice."""
    parts = parse_url(url)
    if parts is None or parts.dialect != POSTGRES:
        raise ValueError("not a PostgreSQL URL")
    userinfo = None
    if parts.userinfo is not None:
        user, colon, password = parts.userinfo.partition(":")
        userinfo = quote(unquote(user), safe="") + (colon and ":" + quote(unquote(password), safe=""))
    return replace(parts, scheme=POSTGRES).unparse(userinfo)


def url_password(url: str) -> str | None:
    """The password of a URL as typed and as decoded (None without one), to scrub from a library's message."""
    parts = parse_url(url)
    if parts is None or parts.userinfo is None or ":" not in parts.userinfo:
        return None
    return parts.userinfo.partition(":")[2] or None


def store_target(location: str | Path) -> tuple[str, str]:
    """Which answer-store backend a configured location names: (`postgresql`, url) or (`sqlite`, file path).

    A plain path and `sqlite:///path` are SQLite files; any other `scheme://` is refused rather than taken as a
    file name (which would create folders named after the credentials)."""
    text = str(location)
    parts = parse_url(text)
    if parts is None:
        return SQLITE, text
    if parts.dialect == POSTGRES:
        return POSTGRES, text
    if parts.dialect == SQLITE and parts.userinfo is None and not parts.host and parts.path.startswith("/"):
        return SQLITE, parts.path[1:] or "."
    shown = parts.unparse("***" if parts.userinfo is not None else None, "")
    raise InputError(None, None, f"answer store {shown}: not a store URL; use a SQLite file path (or "
                                 "sqlite:///path) or a postgresql:// URL")


# What MLflow's tracking and registry stores take (mlflow.tracking._tracking_service.utils): its REST server,
# a file store, or a SQLAlchemy database (driver suffixes such as `postgresql+psycopg2` allowed).
TRACKING_SCHEMES = ("http", "https", "file", SQLITE, POSTGRES, "mysql", "mssql", "databricks", "databricks-uc")
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]*)(?::(?P<port>[^:]*))?")
_PLAIN_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+:\d+")


def tracking_uri(uri: str) -> str:
    """The MLflow tracking URI as MLflow must get it (scheme in lower case: its SQLAlchemy stores refuse
    `SQLITE:///`), or ValueError naming what is wrong, without ever quoting the password.

    Checked here, when the config is read, so a typo is one `error:` line rather than an MLflow traceback after
    the teacher ran, or a local folder named after a server (MLflow takes any scheme-less text as a path)."""
    parts = parse_url(uri)
    if parts is None:
        if _PLAIN_HOST_PORT.fullmatch(uri):
            raise ValueError(f"no scheme; did you mean http://{uri}?")
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri) and not re.match(r"[A-Za-z]:[\\/]", uri):
            raise ValueError("a URI needs `://` after its scheme (e.g. sqlite:///mlflow.db, http://host:5000)")
        if not uri.strip():
            raise ValueError("empty; leave it unset for the work dir's sqlite:///mlflow.db")
        return uri  # a local folder: MLflow's file store
    scheme = parts.scheme.lower()
    if parts.dialect not in TRACKING_SCHEMES:
        raise ValueError(f"unknown scheme {parts.scheme!r}; MLflow takes {', '.join(TRACKING_SCHEMES)}")
    if parts.dialect in (SQLITE, "file") and (parts.host or parts.userinfo is not None or not parts.path[1:]):
        raise ValueError(f"a {parts.dialect} URI names a local file: {parts.dialect}:///relative/path or "
                         f"{parts.dialect}:////absolute/path, with no host or user")
    if parts.dialect in ("http", "https", POSTGRES, "mysql", "mssql"):
        problem = host_port_problem(parts.host, required=parts.dialect.startswith("http"))
        if problem:
            raise ValueError(problem)
    return replace(parts, scheme=scheme).unparse(parts.userinfo)


def host_port_problem(authority: str, required: bool) -> str | None:
    """What is wrong with `host[:port]`, or None."""
    match = _HOST_PORT.fullmatch(authority)
    if match is None:
        return f"cannot read the host and port {authority!r}"
    if required and not match["host"]:
        return "no host (e.g. http://127.0.0.1:5000)"
    port = match["port"]
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return f"port {port!r} is not a number from 1 to 65535"
    return None
