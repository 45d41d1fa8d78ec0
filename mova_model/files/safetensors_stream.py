"""Writing and reading safetensors one tensor at a time, so a component never sits in memory whole.

Format: 8-byte little-endian header length, a JSON header ``{key: {dtype, shape, data_offsets}}``
(plus ``__metadata__``: str -> str) padded with spaces to a multiple of 8 bytes, then the raw
little-endian bytes of every tensor. The header is planned from the shapes before any data is
written; tensors may then arrive in any order (each is written at its offset).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..weights.checkpoint import Checkpoint, CheckpointError

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
NAME_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a file to write: key, dtype and shape."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class StreamWriter:
    """Writes a safetensors file whose header is fixed from ``specs``; ``write`` each tensor once, then ``close``."""

    def __init__(self, path: str | Path, specs: list[TensorSpec], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        # Widest dtypes first keeps every tensor aligned to its element size (the data starts 8-aligned).
        ordered = sorted(specs, key=lambda s: (-s.dtype.itemsize, s.key))
        header, offset, self.specs = {}, 0, {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        for spec in ordered:
            header[spec.key] = {"dtype": DTYPE_NAMES[spec.dtype], "shape": list(spec.shape),
                                "data_offsets": [offset, offset + spec.nbytes]}
            self.specs[spec.key] = (spec, offset)
            offset += spec.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self.data_start = 8 + len(raw)
        self.total_bytes = self.data_start + offset
        self.written: set[str] = set()
        self._file = open(self.path, "wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._file.truncate(self.total_bytes)

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Write one tensor (dtype and shape must match its spec) at its place in the file."""
        if key not in self.specs or key in self.written:
            raise KeyError(f"{key} is not planned for {self.path} or was written already")
        spec, offset = self.specs[key]
        if tensor.dtype != spec.dtype or tuple(tensor.shape) != spec.shape:
            raise ValueError(f"{key}: got {tensor.dtype} {tuple(tensor.shape)}, planned {spec.dtype} {spec.shape}")
        self._file.seek(self.data_start + offset)
        if spec.nbytes:
            self._file.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self.written.add(key)

    def close(self) -> None:
        """Close the file; raises if a planned tensor was never written."""
        self._file.close()
        left = sorted(set(self.specs) - self.written)
        if left:
            raise CheckpointError(f"{self.path} is incomplete: {len(left)} tensors were not written (first: {left[0]})")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._file.close()


class RawReader:
    """Reads tensors of a checkpoint with plain file reads (no memory map): each costs only its own bytes."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self._headers: dict[Path, tuple[int, dict]] = {}

    def _header(self, path: Path) -> tuple[int, dict]:
        if path not in self._headers:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                self._headers[path] = (8 + length, json.loads(f.read(length)))
        return self._headers[path]

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key`` [shape as stored], freshly read from disk."""
        path, stored = self.ckpt.locate(key)
        start, header = self._header(path)
        entry = header[stored]
        if entry["dtype"] not in NAME_DTYPES:
            raise CheckpointError(f"{path}: {stored} has dtype {entry['dtype']}, which cannot be read here.")
        begin, end = entry["data_offsets"]
        buf = torch.empty(end - begin, dtype=torch.uint8)
        with open(path, "rb") as f:
            f.seek(start + begin)
            if f.readinto(buf.numpy().data) != end - begin:
                raise CheckpointError(f"{path} is truncated at tensor {stored}: download it again.")
        return buf.view(NAME_DTYPES[entry["dtype"]]).reshape(entry["shape"])

    def tensors(self, keys=None):
        """Yield (key, tensor) one at a time, in file order."""
        keys = self.ckpt.keys() if keys is None else list(keys)
        order = {k: (str(self.ckpt.locate(k)[0]), self._offset(k)) for k in keys}
        for key in sorted(keys, key=order.__getitem__):
            yield key, self.get(key)

    def _offset(self, key: str) -> int:
        path, stored = self.ckpt.locate(key)
        return self._header(path)[1][stored]["data_offsets"][0]
