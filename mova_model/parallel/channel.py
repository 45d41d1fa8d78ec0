"""Messages between the host and its workers: ``multiprocessing.connection`` (local sockets with an HMAC
handshake on a random key) carrying ``torch.save`` bytes, read back with ``torch.load(weights_only=True)``:
tensors, numbers, strings, lists and dicts only, never code."""

from __future__ import annotations

import io

import torch


def send(conn, kind: str, **payload) -> None:
    """Send one message: ``kind`` and named values (tensors, numbers, strings, None, lists, dicts of them)."""
    buffer = io.BytesIO()
    torch.save({"kind": kind, **payload}, buffer)
    conn.send_bytes(buffer.getbuffer())


def receive(conn) -> tuple[str, dict]:
    """(kind, values) of the next message; EOFError when the other side has gone."""
    message = torch.load(io.BytesIO(conn.recv_bytes()), weights_only=True, map_location="cpu")
    return message.pop("kind"), message
