"""The GGUF "K" types Q4_K, Q5_K and Q6_K in torch: dequantisation, and our own quantiser for the converter.

Each super-block holds 256 values in sub-blocks that carry their own small integer scale (and, for Q4_K / Q5_K,
an offset), themselves scaled by one or two float16 numbers per super-block. Byte layouts (GGUF specification,
ggml's ``block_q4_K`` / ``block_q5_K`` / ``block_q6_K``):

- Q4_K, 144 bytes: d (f16), dmin (f16), 12 bytes of 6-bit scales and offsets for 8 sub-blocks of 32, then 128
  bytes of 4-bit values (each 32-byte run: low nibbles = sub-block 2j, high nibbles = sub-block 2j+1).
  x = d * sc * q - dmin * m.
- Q5_K, 176 bytes: as Q4_K with 32 bytes of fifth bits between the scales and the nibbles (bit i of byte l is
  the fifth bit of value l of sub-block i).
- Q6_K, 210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales (sub-blocks of 16),
  d (f16); x = d * sc * (q - 32).

The quantiser is a plain one (per sub-block minimum/maximum, scales rounded to the nearest step), not
llama.cpp's iterative search: its files dequantise exactly as the format says, with somewhat larger rounding.
"""

from __future__ import annotations

import torch

QK = 256  # values per super-block


def half_at(blocks: torch.Tensor, offset: int) -> torch.Tensor:
    """[n, 1] float32: the float16 stored at byte ``offset`` of each block."""
    return blocks[:, offset:offset + 2].contiguous().view(torch.float16).float()


def _nibble_runs(qs: torch.Tensor) -> torch.Tensor:
    """[n, 128] bytes -> [n, 8, 32] 4-bit values: run j's low nibbles are sub-block 2j, high nibbles 2j+1."""
    runs = qs.reshape(-1, 4, 1, 32)
    shifts = torch.tensor([0, 4], dtype=torch.uint8, device=qs.device).reshape(1, 1, 2, 1)
    return ((runs >> shifts) & 0x0F).reshape(-1, 8, 32)


def _scales_mins(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """12 bytes -> (8 scales, 8 offsets), 6 bits each: bytes 0-3 hold scales 0-3 (and the top bits of scales
    4-7), bytes 4-7 offsets 0-3 (and the top bits of offsets 4-7), bytes 8-11 the low nibbles of scales 4-7
    (low half) and offsets 4-7 (high half)."""
    packed = packed.reshape(-1, 3, 4)
    d, m, both = packed[:, 0], packed[:, 1], packed[:, 2]
    scales = torch.cat((d & 0x3F, (both & 0x0F) | ((d >> 2) & 0x30)), dim=-1)
    mins = torch.cat((m & 0x3F, (both >> 4) | ((m >> 2) & 0x30)), dim=-1)
    return scales.float(), mins.float()


def _scaled(blocks: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    d, dmin = half_at(blocks, 0), half_at(blocks, 2)
    scales, mins = _scales_mins(blocks[:, 4:16])
    return ((d * scales).unsqueeze(-1) * q.float() - (dmin * mins).unsqueeze(-1)).reshape(-1, QK)


def dequantize_q4_k(blocks: torch.Tensor) -> torch.Tensor:
    return _scaled(blocks, _nibble_runs(blocks[:, 16:144]))


def dequantize_q5_k(blocks: torch.Tensor) -> torch.Tensor:
    shifts = torch.arange(8, dtype=torch.uint8, device=blocks.device).reshape(1, 8, 1)
    fifth = (blocks[:, 16:48].unsqueeze(1) >> shifts) & 1
    return _scaled(blocks, _nibble_runs(blocks[:, 48:176]) | (fifth << 4))


def dequantize_q6_k(blocks: torch.Tensor) -> torch.Tensor:
    device = blocks.device
    low = blocks[:, :128].reshape(-1, 2, 1, 64) >> torch.tensor([0, 4], dtype=torch.uint8, device=device).reshape(
        1, 1, 2, 1)
    low = (low & 0x0F).reshape(-1, 8, 32)
    high = blocks[:, 128:192].reshape(-1, 2, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8,
                                                                       device=device).reshape(1, 1, 4, 1)
    high = (high & 0x03).reshape(-1, 8, 32)
    q = ((low | (high << 4)).to(torch.int16) - 32).float().reshape(-1, 16, 16)
    scales = blocks[:, 192:208].contiguous().view(torch.int8).float()
    return (half_at(blocks, 208) * scales).unsqueeze(-1).mul(q).reshape(-1, QK)


# -- quantisation (the converter) ------------------------------------------------------------------------------

def _f16_bytes(values: torch.Tensor) -> torch.Tensor:
    """[n] float -> [n, 2] bytes of float16."""
    return values.to(torch.float16).reshape(-1, 1).view(torch.uint8)


def _round_div(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """round(x / step), 0 where the step is 0."""
    safe = torch.where(step > 0, step, torch.ones_like(step))
    return torch.where(step > 0, torch.round(x / safe), torch.zeros_like(x))


def _super_scale(values: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, 1] float16-rounded super-block scale, [n, k] integer sub-block scales 0..levels) for values >= 0."""
    top = values.amax(dim=-1, keepdim=True) / levels
    top = top.to(torch.float16).float()
    return top, _round_div(values, top).clamp_(0, levels)


def _pack_scales_mins(scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """(8 scales, 8 offsets) of 6 bits -> the 12 bytes ``_scales_mins`` reads."""
    sc, mn = scales.to(torch.uint8), mins.to(torch.uint8)
    first = (sc[:, :4] & 0x3F) | ((sc[:, 4:] >> 4) << 6)
    second = (mn[:, :4] & 0x3F) | ((mn[:, 4:] >> 4) << 6)
    third = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return torch.cat((first, second, third), dim=-1)


def _pack_nibble_runs(q: torch.Tensor) -> torch.Tensor:
    """[n, 8, 32] 4-bit values -> [n, 128] bytes (the inverse of ``_nibble_runs``)."""
    q = q.reshape(-1, 4, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)


def _affine(x: torch.Tensor, top: int):
    """Sub-block scales and offsets for x [n, 8, 32] with values q in 0..top: x ~= d*sc*q - dmin*m."""
    low = x.amin(dim=-1).clamp(max=0.0)
    scale = (x.amax(dim=-1) - low) / top
    d, sc = _super_scale(scale, 63)
    dmin, m = _super_scale(-low, 63)
    step = (d * sc).unsqueeze(-1)
    q = _round_div(x + (dmin * m).unsqueeze(-1), step).clamp_(0, top).to(torch.uint8)
    return d, dmin, sc, m, q


def quantize_q4_k(x: torch.Tensor) -> torch.Tensor:
    """[n, 256] float32 -> [n, 144] bytes."""
    d, dmin, sc, m, q = _affine(x.reshape(-1, 8, 32), 15)
    return torch.cat((_f16_bytes(d), _f16_bytes(dmin), _pack_scales_mins(sc, m), _pack_nibble_runs(q)), dim=-1)


def quantize_q5_k(x: torch.Tensor) -> torch.Tensor:
    """[n, 256] float32 -> [n, 176] bytes."""
    d, dmin, sc, m, q = _affine(x.reshape(-1, 8, 32), 31)
    fifth = ((q >> 4) & 1) << torch.arange(8, dtype=torch.uint8, device=x.device).reshape(1, 8, 1)
    fifth = fifth.sum(dim=1, dtype=torch.uint8)
    return torch.cat((_f16_bytes(d), _f16_bytes(dmin), _pack_scales_mins(sc, m), fifth,
                      _pack_nibble_runs(q & 0x0F)), dim=-1)


def quantize_q6_k(x: torch.Tensor) -> torch.Tensor:
    """[n, 256] float32 -> [n, 210] bytes: 16 symmetric sub-blocks of 16, q in -32..31."""
    x = x.reshape(-1, 16, 16)
    absmax = x.abs().amax(dim=-1)
    d = (absmax.amax(dim=-1, keepdim=True) / 31 / 127).to(torch.float16).float()
    sc = _round_div(absmax / 31, d).clamp_(0, 127)
    q = (_round_div(x, (d * sc).unsqueeze(-1)).clamp_(-32, 31) + 32).to(torch.uint8).reshape(-1, 2, 4, 32)
    # half h: runs k = 0..3 of 32 values; low nibbles of runs 0/1 and 2/3 share bytes, 2-bit tops share bytes
    low = (q[:, :, 0:2] & 0x0F) | ((q[:, :, 2:4] & 0x0F) << 4)
    high = sum(((q[:, :, k] >> 4) & 0x03) << (2 * k) for k in range(4)).to(torch.uint8)
    return torch.cat((low.reshape(-1, 128), high.reshape(-1, 64), sc.to(torch.int8).view(torch.uint8),
                      _f16_bytes(d)), dim=-1)
