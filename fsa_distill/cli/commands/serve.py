"""`fsa-distill serve`: a registered student behind MLflow's own scoring app, with limits on the request body.

`mlflow models serve` reads a body of any size and answers a JSON body nested too deeply with a 500; MLflow has no
setting for either. This command serves the same app (same routes, same answers, one worker, the current
environment as `--env-manager local`) wrapped in models/serving_guard.py's RequestGuard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fsa_distill.cli.console import user_errors
from fsa_distill.core.errors import InputError

if TYPE_CHECKING:
    import socket

DEFAULT_MAX_BODY_MB = 16  # models/serving_guard.MAX_BODY_BYTES, kept here so `--help` imports nothing heavy


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind before the model loads (which takes a while), so a taken port is one error line at once."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:  # the port is taken, below 1024 for a normal user, or the host is unknown
        raise InputError(None, "--host/--port", f"cannot listen on {host}:{port} ({error.strerror or error})"
                         ) from None
    return sock


def serve(
    model_uri: Annotated[str, typer.Option("--model", "-m", help="The model to serve: models:/<name>@<alias> "
                                                                 "(MLFLOW_TRACKING_URI names the registry), "
                                                                 "runs:/<run id>/<path> or a model folder.")],
    host: Annotated[str, typer.Option("--host", "-h", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 5001,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body in MiB; a larger one is "
                                                               "answered 413 without being read.")
                           ] = DEFAULT_MAX_BODY_MB,
) -> None:
    """Serve a student model as `mlflow models serve` does (POST /invocations, GET /ping), with a body above
    --max-body-mb answered 413 and a JSON body nested more than 32 deep answered 400."""
    with user_errors():
        sock = _listening_socket(host, port)
        import uvicorn
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc import scoring_server

        from fsa_distill.models.serving_guard import RequestGuard

        try:
            model = scoring_server.load_model_with_mlflow_config(model_uri)
        except MlflowException as error:
            raise InputError(model_uri, None, error.message) from None  # e.g. not registered
        app = RequestGuard(scoring_server.init(model), max_body_bytes=int(max_body_mb * 2**20))
    typer.echo(f"serving {model_uri} at http://{host}:{port}/invocations", err=True)
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
