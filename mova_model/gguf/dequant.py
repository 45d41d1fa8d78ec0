"""GGUF tensor types and their dequantisation in torch, on whatever device the raw bytes are on.

A quantised GGUF tensor is a run of fixed-size blocks along its last dimension (the rows of a Linear weight
[out, in] are cut into blocks of ``block_size`` values, each stored in ``type_size`` bytes). Here a quantised
weight travels as a uint8 tensor [rows, bytes per row] and becomes floats only when it is used: ``dequantize``
is plain tensor arithmetic (byte masks, shifts, one multiply-add per value), so it runs on the compute device
and inside compiled graphs.

The block layouts follow the GGUF specification (ggml's ``block_q8_0`` and friends); the tests compare every
type with the ``gguf`` library's own numpy dequantisation on files we write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .kquants import dequantize_q4_k, dequantize_q5_k, dequantize_q6_k, half_at


@dataclass(frozen=True)
class GGUFType:
    """One GGUF tensor type: its number in the file format, values per block, bytes per block."""

    name: str
    number: int
    block_size: int
    type_size: int

    @property
    def quantized(self) -> bool:
        return self.name not in FLOAT_TYPES

    def row_bytes(self, row_length: int) -> int:
        return row_length // self.block_size * self.type_size


# The types this pack reads (numbers and block sizes of ggml's type table).
TYPES = {t.name: t for t in (
    GGUFType("F32", 0, 1, 4),
    GGUFType("F16", 1, 1, 2),
    GGUFType("Q4_0", 2, 32, 18),
    GGUFType("Q5_0", 6, 32, 22),
    GGUFType("Q8_0", 8, 32, 34),
    GGUFType("Q4_K", 12, 256, 144),
    GGUFType("Q5_K", 13, 256, 176),
    GGUFType("Q6_K", 14, 256, 210),
    GGUFType("BF16", 30, 1, 2),
)}
TYPES_BY_NUMBER = {t.number: t for t in TYPES.values()}
FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
QUANTIZED_TYPES = tuple(name for name in TYPES if name not in FLOAT_TYPES)


def _blocks(raw: torch.Tensor, qtype: GGUFType) -> torch.Tensor:
    if raw.dtype != torch.uint8:
        raise TypeError(f"a {qtype.name} tensor is carried as uint8 bytes, got {raw.dtype}")
    if raw.numel() % qtype.type_size:
        raise ValueError(f"{raw.numel()} bytes are not whole {qtype.name} blocks of {qtype.type_size} bytes")
    return raw.reshape(-1, qtype.type_size)


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    """34 bytes: scale d (f16), 32 int8 values; x = d * q."""
    d = half_at(blocks, 0)
    q = blocks[:, 2:].contiguous().view(torch.int8).float()
    return d * q


def _low_high_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """[n, 16] bytes -> [n, 32] values: the low nibbles are values 0-15, the high nibbles 16-31."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    """18 bytes: d (f16), 16 bytes of 4-bit values; x = d * (q - 8)."""
    d = half_at(blocks, 0)
    q = _low_high_nibbles(blocks[:, 2:18]).float()
    return d * (q - 8.0)


def _bits(values: torch.Tensor, count: int) -> torch.Tensor:
    """[n, k] bytes -> [n, k, count]: bit b of each byte (least significant first)."""
    shifts = torch.arange(count, device=values.device, dtype=torch.uint8)
    return (values.unsqueeze(-1) >> shifts) & 1


def _q5_0(blocks: torch.Tensor) -> torch.Tensor:
    """22 bytes: d (f16), 4 bytes of fifth bits (bit j for value j, little-endian), 16 bytes of low nibbles;
    x = d * (q - 16)."""
    d = half_at(blocks, 0)
    high = _bits(blocks[:, 2:6], 8).reshape(-1, 32)
    q = (_low_high_nibbles(blocks[:, 6:22]) | (high << 4)).float()
    return d * (q - 16.0)


_QUANTIZED = {"Q8_0": _q8_0, "Q4_0": _q4_0, "Q5_0": _q5_0,
              "Q4_K": dequantize_q4_k, "Q5_K": dequantize_q5_k, "Q6_K": dequantize_q6_k}


def dequantize(raw: torch.Tensor, type_name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
               ) -> torch.Tensor:
    """The values of a GGUF tensor of ``type_name`` as ``dtype`` with the (torch-order) ``shape``, computed on
    ``raw``'s device. ``raw``: uint8 bytes for the quantised types; the float types may come as their own dtype
    or as bytes."""
    qtype = TYPES[type_name]
    if not qtype.quantized:
        stored = FLOAT_TYPES[type_name]
        values = raw.contiguous().view(stored) if raw.dtype == torch.uint8 else raw
        return values.reshape(shape).to(dtype)
    values = _QUANTIZED[type_name](_blocks(raw, qtype))
    if values.numel() != math.prod(shape):
        raise ValueError(f"{type_name} bytes hold {values.numel()} values, the shape {tuple(shape)} needs "
                         f"{math.prod(shape)}")
    return values.reshape(shape).to(dtype)


def byte_shape(shape: tuple[int, ...], type_name: str) -> tuple[int, ...]:
    """The uint8 shape [..., bytes per row] a tensor of ``shape`` takes in ``type_name``."""
    qtype = TYPES[type_name]
    if shape[-1] % qtype.block_size:
        raise ValueError(f"rows of {shape[-1]} values are not whole {type_name} blocks of {qtype.block_size}")
    return (*shape[:-1], qtype.row_bytes(shape[-1]))
