"""Tensors to files, always through ``atomic_write`` (temporary file, fsync, rename): the pack's LoRAs, training
checkpoints and dataset caches. Write errors come out as ``WriteError`` naming the file and the fix (the
libraries' own writers hide the system's error code: safetensors' in its text, torch.save's entirely)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from .atomic_write import atomic_write, write_bytes
from .safetensors_stream import StreamWriter, TensorSpec


def save_safetensors(tensors: dict[str, torch.Tensor], target: str | os.PathLike, metadata: dict | None = None,
                     overwrite: bool = True, what: str = "") -> Path:
    """Write ``tensors`` as a .safetensors file (one tensor at a time: no second copy of them in memory)."""
    specs = [TensorSpec(key, t.dtype, tuple(t.shape)) for key, t in tensors.items()]
    with atomic_write(target, overwrite, what) as tmp:
        with StreamWriter(tmp, specs, metadata) as writer:
            for key, tensor in tensors.items():
                writer.write(key, tensor)
    return Path(target)


def save_torch(obj, target: str | os.PathLike, overwrite: bool = True, what: str = "") -> Path:
    """``torch.save(obj)`` into ``target`` (serialised in memory first, so a failed write is a plain OSError)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(target, buffer.getbuffer(), overwrite, what)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 24):
            digest.update(piece)
    return digest.hexdigest()
