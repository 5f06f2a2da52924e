"""Issue #23: one parser of store URLs (core/urls.py) for redaction and the answer store's backend choice.

Passwords typed raw with URL-special characters (`#`, `/`, `?`, `@`, quotes) never reach the redacted form, an
error line or `config show`; an upper-case scheme or a driver suffix still names PostgreSQL.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fsa_distill.cli.app import app
from fsa_distill.core.errors import InputError
from fsa_distill.core.redact import redact_text, redact_url
from fsa_distill.core.urls import is_postgres_url, libpq_url, parse_url, store_target

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Both ends of every generated password are fixed markers: a leak of either half of it shows as a marker.
HEAD, TAIL = "Hq7", "Zk9"
passwords = st.text(alphabet=string.punctuation + string.ascii_letters + string.digits, min_size=1, max_size=24)
schemes = st.sampled_from(["postgresql", "POSTGRESQL", "postgres", "PostgreSQL+psycopg", "postgresql+psycopg2",
                           "https", "HTTP", "mysql"])


def _url(scheme: str, middle: str) -> tuple[str, str]:
    password = f"{HEAD}{middle}{TAIL}"
    return f"{scheme}://fsa:{password}@db.example:5432/answers?sslmode=require", password


@pytest.mark.parametrize(("url", "dialect", "host"), [
    ("POSTGRESQL://u:p@db/x", "postgresql", "db"),
    ("postgres+psycopg://u:p@db:5432/x", "postgresql", "db:5432"),
    ("postgresql://u:pa#ss/w?rd@db/x", "postgresql", "db"),
    ("sqlite:////abs/mlflow.db", "sqlite", ""),
    ("HTTP://127.0.0.1:5000", "http", "127.0.0.1:5000"),
])
def test_parse_url(url: str, dialect: str, host: str) -> None:
    parts = parse_url(url)
    assert parts is not None and (parts.dialect, parts.host) == (dialect, host)


def test_store_target_choices(tmp_path: Path) -> None:
    assert store_target("Postgres+psycopg://u:p@db/x") == ("postgresql", "Postgres+psycopg://u:p@db/x")
    assert libpq_url("Postgres+psycopg://u:p@db/x") == "postgresql://u:p@db/x"
    assert store_target(f"sqlite:///{tmp_path}/a.sqlite") == ("sqlite", f"{tmp_path}/a.sqlite")
    assert store_target("relative/a.sqlite") == ("sqlite", "relative/a.sqlite")
    with pytest.raises(InputError, match=r"answer store mysql://\*\*\*@db/x: not a store URL") as caught:
        store_target("mysql://u:s3cr3t@db/x")
    assert "s3cr3t" not in str(caught.value)


@FAST
@given(scheme=schemes, middle=passwords)
def test_passwords_never_survive_redaction(scheme: str, middle: str) -> None:
    url, password = _url(scheme, middle)
    parts = parse_url(url)
    assert parts is not None and parts.userinfo == f"fsa:{password}" and parts.host == "db.example:5432"
    assert is_postgres_url(url) == (parts.dialect == "postgresql")
    shown = [redact_url(url), redact_text(f"could not connect to '{url}': refused"), redact_text(f"<{url}>")]
    for text in shown:
        assert HEAD not in text and TAIL not in text, text
    assert redact_url(url).startswith(f"{scheme}://***@db.example:5432/answers")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(middle=passwords)
def test_config_show_and_store_errors_hide_passwords(middle: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`config show` (YAML and JSON) and the error of a store that refuses the connection (port 1 on this host:
    nothing listens) print the URLs without the password, and nothing is created on disk."""
    work = tmp_path_factory.mktemp("work")
    password = f"{HEAD}{middle}{TAIL}"
    url = f"POSTGRESQL+psycopg://fsa:{password}@127.0.0.1:1/answers"
    runner = CliRunner()
    sets = [f"generation.cache_url={url}", f"tracking.mlflow_tracking_uri={url}", f"work_dir={work}"]
    args = [arg for item in sets for arg in ("--set", item)]
    for extra in ([], ["--json"]):
        result = runner.invoke(app, ["config", "show", *args, *extra])
        assert result.exit_code == 0, result.output
        assert HEAD not in result.output and TAIL not in result.output
    result = runner.invoke(app, ["cache", "export", str(work / "out.jsonl"), "--store", url, "--set", f"work_dir={work}"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: answer store postgresql+psycopg://***@127.0.0.1:1/answers") or \
        result.output.startswith("error: answer store POSTGRESQL+psycopg://***@127.0.0.1:1/answers"), result.output
    assert len(result.output.strip().splitlines()) == 1 and HEAD not in result.output and TAIL not in result.output
    assert list(work.iterdir()) == [], "no file or folder named after the URL"


def test_json_dump_of_config_hides_password() -> None:
    from fsa_distill.core.config import resolve_config

    url = f"postgres://u:{HEAD}#/?@{TAIL}@db/x"
    config = resolve_config("demo", overrides=[f"generation.cache_url={url}"], environ={})
    dumped = json.dumps(config.model_dump(mode="json"))
    assert HEAD not in dumped and TAIL not in dumped and "postgres://***@db/x" in dumped


@pytest.mark.parametrize(("uri", "problem"), [
    ("htp://fsa:s3cr3t@mlflow.example:5000", "unknown scheme 'htp'"),
    ("mlflow.example:5000", "no scheme; did you mean http://mlflow.example:5000?"),
    ("http://fsa:s3#cr3t@mlflow.example:50x0", "port '50x0' is not a number"),
    ("https://", "no host"),
    ("sqlite://mlflow.db", "a sqlite URI names a local file"),
    ("postgresql:fsa:s3cr3t@db/mlflow", "a URI needs `://` after its scheme"),
])
def test_bad_tracking_uri_is_one_error_line_without_the_password(uri: str, problem: str, tmp_path: Path) -> None:
    """Read with the config, from `--set` or MLFLOW_TRACKING_URI: one line naming the key and the problem, exit 2,
    before anything runs (MLflow would take `mlflow.example:5000` as a folder to create)."""
    runner = CliRunner()
    for args, env in (([ "--set", f"tracking.mlflow_tracking_uri={uri}"], {}), ([], {"MLFLOW_TRACKING_URI": uri})):
        result = runner.invoke(app, ["config", "show", "--set", f"work_dir={tmp_path}", *args], env=env)
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: invalid config: tracking.mlflow_tracking_uri: {problem}")
        assert len(result.output.strip().splitlines()) == 1 and "s3" not in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_tracking_uri_scheme_case_and_driver_suffix_reach_mlflow(tmp_path: Path) -> None:
    """`SQLITE:///` (MLflow's SQLAlchemy store refuses the upper case) is normalised; a driver suffix is kept."""
    from fsa_distill.core.config import resolve_config
    from fsa_distill.tasks.tracking.runs import configure_tracking

    for uri in (f"SQLITE:///{tmp_path}/a.db", f"sqlite+pysqlite:///{tmp_path}/b.db"):
        config = resolve_config("demo", overrides=[f"tracking.mlflow_tracking_uri={uri}",
                                                   f"work_dir={tmp_path / 'work'}"], environ={})
        assert config.mlflow_uri == uri.replace("SQLITE", "sqlite")
        assert configure_tracking(config)
    assert (tmp_path / "a.db").is_file() and (tmp_path / "b.db").is_file()
