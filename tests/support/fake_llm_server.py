"""Test double for an OpenAI-compatible language model server (a real HTTP server on 127.0.0.1).

A language model cannot run here, so this server answers /v1/models and /v1/chat/completions the way
Ollama / LM Studio / llama.cpp / OpenAI do, including their error bodies, and records every request.
The default reply wraps a caption in a reasoning block and a markdown fence, as real models often do.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VISION_MODEL, TEXT_MODEL = "test-vision:7b", "test-text:3b"


def caption_for(idea: str) -> str:
    """The clean caption the default reply holds for ``idea`` (its first line)."""
    first = idea.strip().splitlines()[0] if idea.strip() else ""
    return (f"A woman waits under an awning while it rains. Test caption for: {first}\n\n"
            "She lifts her cup and says, \"Of course it pours today.\"\n\n"
            "The audio shows her voice over steady rain and a soft piano.")


def wrapped_reply(caption: str) -> str:
    return f"<think>\nThe user wants a caption. Plan it.\n</think>\n\nHere is the caption:\n```text\n{caption}\n```\n"


class FakeLLMServer:
    """Start with ``with FakeLLMServer() as server``; ``server.url`` is the base URL up to /v1.

    ``respond``: optional callable(request) -> (status, body) or None (None: the default behaviour); ``body`` is
    a dict (sent as JSON) or str. ``required_key``: requests must carry ``Bearer <key>``. ``delay``: seconds to
    wait before answering. ``requests``: every request as {method, path, headers, body}.
    """

    def __init__(self, models=(VISION_MODEL, TEXT_MODEL), vision_models=(VISION_MODEL,)):
        self.models = list(models)
        self.vision_models = set(vision_models)
        self._lock = threading.Lock()
        self.reset()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def reset(self) -> None:
        """Back to the default behaviour, with no recorded requests."""
        self.required_key: str | None = None
        self.respond = None
        self.delay = 0.0
        with self._lock:
            self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def chat_requests(self) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- behaviour -------------------------------------------------------------------------------------------
    def answer(self, request: dict) -> tuple[int, object]:
        if self.delay:
            time.sleep(self.delay)
        if self.respond is not None:
            custom = self.respond(request)
            if custom is not None:
                return custom
        auth = request["headers"].get("authorization", "")
        if self.required_key is not None and auth != f"Bearer {self.required_key}":
            given = auth.removeprefix("Bearer ")
            return 401, {"error": {"message": f"Incorrect API key provided: {given or '(none)'}",
                                   "type": "invalid_request_error", "code": "invalid_api_key"}}
        if request["method"] == "GET" and request["path"] == "/v1/models":
            return 200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "test"}
                                                    for m in self.models]}
        if request["method"] != "POST" or request["path"] != "/v1/chat/completions":
            return 404, "404 page not found"
        body = request["body"]
        model = body.get("model") if isinstance(body, dict) else None
        if model not in self.models:
            return 404, {"error": {"message": f'model "{model}" not found, try pulling it first',
                                   "type": "api_error"}}
        user = body["messages"][-1]["content"]
        has_image = isinstance(user, list) and any(part.get("type") == "image_url" for part in user)
        if has_image and model not in self.vision_models:
            return 500, {"error": {"message": "Failed to create new sequence: failed to process inputs: this model "
                                              "is missing data required for image input", "type": "api_error"}}
        text = user if isinstance(user, str) else next(p["text"] for p in user if p.get("type") == "text")
        idea = text.split("Idea for the clip:\n", 1)[-1].split("\n\n", 1)[0]
        return 200, completion(wrapped_reply(caption_for(idea)), model=model)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output quiet
                pass

            def _serve(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                request = {"method": method, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                with server._lock:
                    server.requests.append(request)
                status, reply = server.answer(request)
                data = (json.dumps(reply) if not isinstance(reply, str) else reply).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json" if not isinstance(reply, str)
                                     else "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

        return Handler


def completion(content, finish_reason="stop", model=VISION_MODEL) -> dict:
    """A chat.completion body holding ``content``."""
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class ScriptedServer:
    """A raw TCP server on 127.0.0.1 that misbehaves on purpose: each connection's request is read (headers and a
    Content-Length body) and recorded, then ``script(sock, request)`` writes whatever it likes (a trickle, a
    header every few seconds, no HTTP at all...). ``hangups``: seconds from a request's arrival until the server
    saw the client close the connection (None while the script ran to its end without noticing)."""

    def __init__(self, script):
        self.script = script
        self.requests: list[dict] = []
        self.hangups: list[float | None] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket):
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", 0))
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            request = {"method": method, "path": path, "headers": headers, "body": body, "at": time.monotonic()}
            self.requests.append(request)
            try:
                self.script(conn, request)
                self.hangups.append(None)
            except OSError:  # the client hung up (the test's deadline or Cancel)
                self.hangups.append(time.monotonic() - request["at"])


def http_reply(status: int, body: bytes | str | dict, headers: dict | None = None) -> bytes:
    """The bytes of a whole HTTP/1.1 reply (JSON for a dict)."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def wait_for_hangup(conn: socket.socket, limit: float = 10.0) -> None:
    """Block until the client closes ``conn`` (raises ConnectionResetError then, as a hung-up send would)."""
    conn.settimeout(limit)
    try:
        data = conn.recv(1)
    except (TimeoutError, socket.timeout):
        return  # the client never hung up: the hangups entry stays None
    if data == b"":
        raise ConnectionResetError("client closed")


# -- scripts for ScriptedServer that answer too slowly in one way or another ----------------------------------------

def trickle_body(reply: bytes, every: float):
    """A script sending ``reply``'s headers at once, then its body one byte per ``every`` seconds."""
    head = reply.index(b"\r\n\r\n") + 4

    def script(conn, request):
        conn.sendall(reply[:head])
        for byte in reply[head:]:
            conn.sendall(bytes([byte]))
            time.sleep(every)
    return script


def trickle_all(reply: bytes, every: float):
    """A script sending the whole of ``reply``, headers included, one byte per ``every`` seconds."""
    def script(conn, request):
        for byte in reply:
            conn.sendall(bytes([byte]))
            time.sleep(every)
    return script


def drip_headers(every: float, count: int):
    """A script sending a status line, then one more header line each ``every`` seconds, ``count`` times, and never
    the blank line that ends the headers."""
    def script(conn, request):
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for i in range(count):
            time.sleep(every)
            conn.sendall(f"X-Wait-{i}: still thinking\r\n".encode())
    return script


class RecordingEnviron(dict):
    """An environment (for the code that reads os.environ) that remembers which variables were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = set()

    def get(self, name, default=None):
        self.read.add(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)

    def __contains__(self, name):
        self.read.add(name)
        return super().__contains__(name)
