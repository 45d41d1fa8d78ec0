"""A small ComfyUI HTTP + websocket client (standard library only)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from safe_files import write_bytes


class ServerError(RuntimeError):
    """The server is unreachable or refused a request; the message says what to do."""


class ComfyClient:
    def __init__(self, url: str, timeout: float = 30.0):
        parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
        self.base = f"{parsed.scheme}://{parsed.netloc}"
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _request(self, path: str, data: bytes | None = None, headers: dict | None = None) -> bytes:
        request = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            raise ServerError(f"{self.base}{path} answered {exc.code}: {body[:2000]}") from exc
        except (urllib.error.URLError, ConnectionError, socket.timeout) as exc:
            raise ServerError(
                f"cannot reach ComfyUI at {self.base} ({getattr(exc, 'reason', exc)}): start it first, e.g. "
                "python main.py --listen 127.0.0.1 --port 8188, or pass --server with its address."
            ) from exc

    def get_json(self, path: str):
        return json.loads(self._request(path))

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def upload_image(self, path: Path) -> str:
        """Upload a file to ComfyUI's input folder; returns the name LoadImage takes."""
        boundary = uuid.uuid4().hex
        body = b"".join([
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode(), path.read_bytes(), b"\r\n",
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n".encode(),
            f"--{boundary}--\r\n".encode(),
        ])
        answer = json.loads(self._request("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue(self, prompt: dict) -> str:
        data = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        try:
            answer = json.loads(self._request("/prompt", data, {"Content-Type": "application/json"}))
        except ServerError as exc:
            raise ServerError(f"ComfyUI refused the workflow: {exc}") from exc
        return answer["prompt_id"]

    def cancel(self, prompt_id: str) -> None:
        """Stop this prompt: interrupt it if it runs, drop it from the queue if it waits."""
        headers = {"Content-Type": "application/json"}
        self._request("/interrupt", json.dumps({"prompt_id": prompt_id}).encode(), headers)
        self._request("/queue", json.dumps({"delete": [prompt_id]}).encode(), headers)

    def history(self, prompt_id: str) -> dict:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id, {})

    def download(self, item: dict, target: Path) -> Path:
        query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
        return write_bytes(target, self._request(f"/view?{query}"))  # never half a file, whatever happens

    def websocket(self) -> "WebSocket":
        return WebSocket(self.host, self.port, f"/ws?clientId={self.client_id}", self.timeout)


class WebSocket:
    """Just enough of RFC 6455 to read ComfyUI's messages: text frames as dicts; binary frames (previews) go to
    ``on_binary`` when set, else are skipped."""

    def __init__(self, host: str, port: int, path: str, timeout: float):
        self.on_binary = None
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ServerError(f"cannot open ComfyUI's websocket at {host}:{port}{path} ({exc})") from exc
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        header = b""
        while b"\r\n\r\n" not in header:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ServerError("ComfyUI closed the websocket during the handshake")
            header += chunk
        status = header.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status:
            raise ServerError(f"ComfyUI refused the websocket: {status}")

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ServerError("ComfyUI closed the websocket (did the server stop?)")
            data += chunk
        return data

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def receive(self, timeout: float | None = None) -> dict | None:
        """The next text message as a dict (None on a timeout); answers pings, hands binary previews to
        ``on_binary``."""
        message, text = b"", False
        while True:
            self.sock.settimeout(timeout)
            try:
                first, second = self._read(2)
            except socket.timeout:
                return None
            self.sock.settimeout(None)  # the rest of a frame follows: never stop half-way through it
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", self._read(8))
            payload = self._read(length)
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode == 0x8:
                raise ServerError("ComfyUI closed the websocket (did the server stop?)")
            if opcode in (0x1, 0x2):
                message, text = payload, opcode == 0x1
            elif opcode == 0x0:
                message += payload
            if first & 0x80:
                if text:
                    return json.loads(message)
                if self.on_binary is not None:
                    self.on_binary(message)
                message = b""

    def close(self) -> None:
        try:
            self._send(0x8)
        except OSError:
            pass
        self.sock.close()
