"""Reading a MOVA component from a .gguf file (``gguf.GGUFReader``): its tensors, shapes, types and the
metadata our converter writes (component kind, config, expert), as a ``Checkpoint`` the loaders take.

Quantised tensors come out as their raw uint8 bytes [rows, bytes per row] (``tensors``) or as floats
(``dequantized``); float tensors as torch tensors of their own dtype. Everything is checked from the header
before any tensor is read: an unreadable or cut-short file and a tensor type this pack cannot compute with
each get a message naming the file and what to do.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from ..weights.checkpoint import Checkpoint, CheckpointError, strip_prefix
from .dequant import FLOAT_TYPES, QUANTIZED_TYPES, TYPES, TYPES_BY_NUMBER, dequantize

SUFFIX = ".gguf"
METADATA_PREFIX = "mova."           # our keys: mova.component, mova.config, mova.expert, mova.format, ...
SHAPE_PREFIX = "mova.shape."        # the full shape of a tensor stored with fewer dimensions (GGUF holds 4 at most)
ARCHITECTURE = "mova"
CONVERT_HINT = ("write MOVA .gguf files with python -m mova_model.convert RELEASE OUT --dtype gguf_q8_0 "
                "(or gguf_q6_k, gguf_q5_k, gguf_q4_k)")


def _field_value(field):
    try:
        value = field.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    return value


class GGUFCheckpoint(Checkpoint):
    """A component in one .gguf file. ``dtypes()`` names GGUF types ('Q8_0', 'Q6_K', 'BF16', 'F32', ...)."""

    _reader = None
    _entries: dict

    def tensors(self, keys=None):
        """Yield (key, tensor): quantised tensors as uint8 bytes [rows..., bytes per row], float ones as floats
        of their shape; each copied out of the file (the model owns its memory)."""
        wanted = self.keys() if keys is None else [k for k in self.keys() if k in set(keys)]
        for key in wanted:
            yield key, self.get(key)

    def get(self, key: str) -> torch.Tensor:
        entry = self._entries[key]
        data = np.array(entry.data, copy=True)
        type_name = self._dtypes[key]
        if type_name in FLOAT_TYPES:
            raw = torch.from_numpy(data.view(np.uint8).reshape(-1))
            return raw.view(FLOAT_TYPES[type_name]).reshape(self._shapes[key])
        shape = self._shapes[key]
        rows = math.prod(shape[:-1])
        return torch.from_numpy(data.view(np.uint8)).reshape(rows, -1).reshape(*shape[:-1], -1)

    def dequantized(self, key: str, dtype: torch.dtype = torch.float32, device="cpu") -> torch.Tensor:
        """The tensor as ``dtype`` floats of its shape, dequantised on ``device``."""
        return dequantize(self.get(key).to(device), self._dtypes[key], self._shapes[key], dtype)

    @property
    def quantized_keys(self) -> list[str]:
        return [k for k, t in self._dtypes.items() if t in QUANTIZED_TYPES]


def _metadata(path: Path, reader) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(text metadata under mova.*, full shapes recorded for tensors stored flattened)."""
    metadata, shapes = {}, {}
    for name, field in reader.fields.items():
        if name.startswith(SHAPE_PREFIX):
            value = _field_value(field)
            if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
                raise CheckpointError(f"{path}: its {name} metadata is not a list of sizes: the file is damaged; "
                                      f"{CONVERT_HINT}.")
            shapes[name[len(SHAPE_PREFIX):]] = tuple(value)
        elif name.startswith(METADATA_PREFIX) or name == "general.architecture":
            value = _field_value(field)
            if isinstance(value, str):
                metadata[name] = value
    return metadata, shapes


def _reader(path: Path):
    from gguf import GGUFReader

    size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return GGUFReader(path, "r")
    except Exception as exc:  # the reader raises ValueError, KeyError, IndexError, struct errors... on bad bytes
        if size < 24:
            problem = f"is empty or cut short ({size} bytes)"
        else:
            problem = f"is not a readable GGUF file ({type(exc).__name__}: {exc})"
        raise CheckpointError(f"{path} {problem}: the download or conversion was interrupted or the file is "
                              f"damaged; download it again or {CONVERT_HINT}.") from exc


def open_gguf(path: str | Path) -> GGUFCheckpoint:
    """A .gguf file as a Checkpoint, its header checked (types, sizes, the data inside the file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: check the path or {CONVERT_HINT}.")
    reader = _reader(path)
    metadata, full_shapes = _metadata(path, reader)
    size = path.stat().st_size
    ckpt = GGUFCheckpoint(files=[path], metadata=metadata)
    ckpt._entries = {}
    for tensor in reader.tensors:
        key = strip_prefix(tensor.name)
        qtype = TYPES_BY_NUMBER.get(int(tensor.tensor_type))
        if qtype is None:
            kind = getattr(tensor.tensor_type, "name", str(int(tensor.tensor_type)))
            raise CheckpointError(
                f"{path} stores {tensor.name} as {kind}, which MOVA's loaders cannot dequantise (they read "
                f"{', '.join(QUANTIZED_TYPES)}, F16, BF16 and F32): {CONVERT_HINT}.")
        stored = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # GGUF lists the fastest dimension first
        shape = full_shapes.get(tensor.name, stored)
        if math.prod(shape) != math.prod(stored) or shape[-1] % qtype.block_size:
            raise CheckpointError(f"{path}: {tensor.name} is stored as {stored} but described as {shape}: the file "
                                  f"is damaged; {CONVERT_HINT}.")
        if tensor.data_offset + tensor.n_bytes > size or tensor.data.nbytes != tensor.n_bytes:
            raise CheckpointError(
                f"{path} is truncated: {tensor.name} needs bytes up to {tensor.data_offset + tensor.n_bytes} but "
                f"the file holds {size}. The download or conversion was interrupted: download it again or "
                f"{CONVERT_HINT}.")
        ckpt._where[key] = (path, tensor.name)
        ckpt._shapes[key] = shape
        ckpt._dtypes[key] = qtype.name
        ckpt._entries[key] = tensor
    if not ckpt._where:
        raise CheckpointError(f"{path} holds no tensors: it is not a MOVA component; {CONVERT_HINT}.")
    ckpt._reader = reader
    return ckpt

