"""A request guard in front of MLflow's scoring app: a body too large is a 413, a JSON body nested too deeply a 400.

MLflow's scoring server reads the whole body into memory and parses it before the model (models/serving.py) sees
it, and it has no setting to limit either: a body of any size is read, and a JSON body nested past Python's
recursion limit makes `json.loads` raise RecursionError, which the server answers with a 500. This ASGI
middleware wraps MLflow's own app unchanged (`fsa-distill serve` runs it): it reads the body up to the limit,
measures the nesting of a JSON body without parsing it, and hands the body on to MLflow only when both are
within bounds. Its answers have the shape of MLflow's error answers (`{"error_code", "message"}`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# The largest useful request is MAX_TEXTS (1024) texts of MAX_TEXT_CHARS (8192) characters: about 8.5 MB of JSON;
# the rest of a longer text is cut by the model anyway. A body holds at most this many bytes in server memory.
MAX_BODY_BYTES = 16 * 2**20
# The model's input nests 3 deep ({"dataframe_records": [{"text": ...}]}); MLflow's other input shapes 4.
MAX_JSON_DEPTH = 32
# A JSON string, escapes included (the unrolled form: linear time, no backtracking between alternatives).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]], _STEP[[ord("]"), ord("}")]] = 1, -1


def json_depth(body: bytes) -> int:
    """How deeply `body`'s arrays and objects nest, counted over its brackets outside strings (vectorised, no
    recursion). For valid JSON this is the exact depth; for a body that is not JSON, MLflow answers 400 anyway."""
    skeleton = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    return int(np.cumsum(_STEP[skeleton], dtype=np.int64).max(initial=0))


async def _refuse(send: Send, status: int, error_code: str, message: str) -> None:
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name), "")


class RequestGuard:
    """ASGI middleware: bodies above `max_body_bytes` get a 413, JSON bodies nested deeper than `max_depth` a 400;
    any other request reaches `app` with its body as it came."""

    def __init__(self, app: App, max_body_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app, self.max_body_bytes, self.max_depth = app, max_body_bytes, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive)
        if body is None:
            await _refuse(send, 413, "RESOURCE_LIMIT_EXCEEDED",
                          f"the request body is larger than the server's limit of {self.max_body_bytes} bytes")
            return
        is_json = _header(scope, b"content-type").split(";")[0].strip().lower() == "application/json"
        if is_json and (depth := await asyncio.to_thread(json_depth, body)) > self.max_depth:  # 16 MB: ~0.1 s
            await _refuse(send, 400, "INVALID_PARAMETER_VALUE",
                          f"the JSON body nests {depth} levels deep; the server takes at most {self.max_depth}")
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to pass the limit (from Content-Length, or while it
        streams in), so no more than the limit is ever held."""
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)  # the client left; the app sees the disconnect when it asks next
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then the server's own messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
