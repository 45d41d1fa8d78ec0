"""Rotary position embeddings: the towers' own RoPE and the bridge's time-aligned RoPE.

Tower RoPE rotates interleaved pairs (x[2i], x[2i+1]) by a complex64 table; the bridge rotates
halves (x[i], x[i + d/2]) with (cos, sin) pairs of real tensors.
"""

import functools

import torch


def _angles(dim: int, positions: torch.Tensor, theta: float, dtype: torch.dtype) -> torch.Tensor:
    """Rotation angles [N, dim/2] for positions [N] (frequencies theta^(-2i/dim))."""
    exponents = torch.arange(0, dim, 2, dtype=dtype, device=positions.device)[: dim // 2] / dim
    inv_freq = 1.0 / (theta ** exponents)
    return positions.to(dtype)[:, None] * inv_freq[None, :]


def tower_rope_video(head_dim: int, grid: tuple[int, int, int], device=None, theta: float = 10000.0) -> torch.Tensor:
    """3-D RoPE table for a video token grid (f, h, w): complex64 [f*h*w, head_dim/2] (float64 math)."""
    return _cached_table(("video", head_dim, tuple(grid), theta), device)


def tower_rope_audio(head_dim: int, length: int, device=None, theta: float = 10000.0) -> torch.Tensor:
    """1-D RoPE table over the full head_dim for audio tokens 0..length-1: complex64 [length, head_dim/2]."""
    return _cached_table(("audio", head_dim, int(length), theta), device)


@functools.lru_cache(maxsize=8)
@torch.inference_mode(False)  # a normal tensor even when first made under inference mode (usable in training)
def _table(key: tuple, device: str) -> torch.Tensor:
    kind, head_dim, size, theta = key
    if kind == "audio":
        angles = _angles(head_dim, torch.arange(size, device=device), theta, torch.float64)
    else:
        f, h, w = size
        d_hw = head_dim // 3
        d_f = head_dim - 2 * d_hw
        a_f = _angles(d_f, torch.arange(f, device=device), theta, torch.float64)
        a_h = _angles(d_hw, torch.arange(h, device=device), theta, torch.float64)
        a_w = _angles(d_hw, torch.arange(w, device=device), theta, torch.float64)
        angles = torch.cat([a_f[:, None, None, :].expand(f, h, w, -1), a_h[None, :, None, :].expand(f, h, w, -1),
                            a_w[None, None, :, :].expand(f, h, w, -1)], dim=-1).reshape(f * h * w, -1)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def _cached_table(key: tuple, device) -> torch.Tensor:
    """Tables depend only on the grid: one computation per grid and device, reused by every step and pass
    (a few MiB at 360p; the 8 most recent are kept)."""
    return _table(key, str(torch.device(device)) if device is not None else "cpu")


def apply_interleaved_rope(x: torch.Tensor, table: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) as complex numbers: x [B, L, H*D], table complex [L, D/2]
    -> [B, L, H*D], computed in float32."""
    b, l, c = x.shape
    pairs = torch.view_as_complex(x.float().view(b, l, num_heads, c // num_heads // 2, 2))
    return torch.view_as_real(pairs * table[None, :, None, :]).view(b, l, c).to(x.dtype)


def bridge_rope(head_dim: int, positions: torch.Tensor, theta: float = 10000.0):
    """Rotate-half RoPE table for (fractional) positions [N]: cos/sin [N, head_dim], float32 math."""
    angles = _angles(head_dim, positions.float(), theta, torch.float32)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def aligned_positions(grid: tuple[int, int, int], audio_len: int, video_fps: float, audio_fps: float, device=None):
    """Positions on the audio-latent time axis: video tokens [f*h*w] and audio tokens [audio_len].

    A video latent frame covers 4 video frames, so latent frame k sits at k * audio_fps / (fps / 4).
    """
    f, h, w = grid
    scale = float(audio_fps) / (float(video_fps) / 4.0)
    video = (torch.arange(f, device=device, dtype=torch.float32) * scale).repeat_interleave(h * w)
    audio = torch.arange(audio_len, device=device, dtype=torch.float32)
    return video, audio


def apply_half_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rotate halves: x [B, L, H*D], cos/sin [L, D] -> [B, L, H*D]."""
    b, l, c = x.shape
    heads = x.view(b, l, num_heads, c // num_heads)
    first, second = heads.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    cos, sin = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)  # no-ops when cast once
    return (heads * cos + rotated * sin).view(b, l, c)
