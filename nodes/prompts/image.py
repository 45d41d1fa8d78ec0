"""The first frame as a PNG data URL for a vision model (torch + the standard library; no PIL needed)."""

from __future__ import annotations

import base64
import struct
import zlib

import torch

from ..media_values import image_pixels

MAX_SIDE = 1024  # vision models downscale anyway; a smaller upload is faster and cheaper on hosted APIs


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: torch.Tensor) -> bytes:
    """8-bit RGB PNG of ``pixels`` [H, W, 3] uint8."""
    height, width, channels = pixels.shape
    if channels != 3 or pixels.dtype != torch.uint8:
        raise ValueError(f"encode_png takes [H, W, 3] uint8 pixels, got {tuple(pixels.shape)} {pixels.dtype}")
    rows = pixels.contiguous().numpy().reshape(height, width * 3)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(height))  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + \
        _chunk(b"IEND", b"")


def frame_pixels(image: torch.Tensor, max_side: int = MAX_SIDE) -> torch.Tensor:
    """The first image of a ComfyUI IMAGE [B, H, W, C] in 0..1 as uint8 RGB [h, w, 3], the longer side scaled
    down to ``max_side`` (aspect kept; never scaled up)."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] == 0 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"image must be a ComfyUI IMAGE [B, H, W, 3], got shape {tuple(image.shape)}")
    frame = image_pixels(image[:1].detach().cpu(), "image")[0]  # 8/16-bit, grey and alpha by their type
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        frame = torch.nn.functional.interpolate(frame.permute(2, 0, 1)[None], size=size, mode="bilinear",
                                                antialias=True, align_corners=False)[0].permute(1, 2, 0)
    return (frame.clamp(0, 1) * 255).round().to(torch.uint8)


def image_data_url(image: torch.Tensor, max_side: int = MAX_SIDE) -> str:
    """``data:image/png;base64,…`` of the first image in a ComfyUI IMAGE batch."""
    png = encode_png(frame_pixels(image, max_side))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
