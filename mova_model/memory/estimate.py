"""Memory a MOVA generation needs, estimated from width x height x frames before anything is allocated, and
the largest size that fits a budget."""

from __future__ import annotations

import math
from typing import Callable

from ..configs import DiTConfig
from ..sampling.sizes import PATCH, VAE_SPACE, VAE_TIME, VIDEO_LATENT_CHANNELS

GIB = 1024 ** 3
CONDITION_CHANNELS = VIDEO_LATENT_CHANNELS + 4
# float32 copies of the latents one sampling run holds: noise/latents, condition (20 channels), the model input
# (36), velocities of the CFG passes and the Euler update.
LATENT_COPIES = 8


def condition_bytes(width: int, height: int, frames: int) -> int:
    """Host memory MOVA Conditioning needs: the frames [F,H,W,3] float32 it builds and the copy the VAE takes."""
    return 2 * frames * height * width * 3 * 4


def forward_bytes(video_shape, audio_shape, video: DiTConfig, audio: DiTConfig, dtype_size: int) -> int:
    """Rough peak activation memory of one joint forward: the FFN hidden and a few copies of the tokens."""
    b, _, t, h, w = video_shape
    video_tokens = (t // video.patch_size[0]) * (h // video.patch_size[1]) * (w // video.patch_size[2])
    audio_tokens = audio_shape[-1] // audio.patch_size[0]
    per_sample = video_tokens * (video.ffn_dim + 6 * video.dim) + audio_tokens * (audio.ffn_dim + 6 * audio.dim)
    return int(b * per_sample * dtype_size)


def sampling_bytes(width: int, height: int, frames: int, fps: float, sample_rate: int, hop: int,
                   audio_channels: int, video: DiTConfig, audio: DiTConfig, dtype_size: int) -> int:
    """Device memory of one sampling run at batch 1 besides the weights: one forward and the latents."""
    t = (frames - 1) // VAE_TIME + 1
    video_shape = (1, VIDEO_LATENT_CHANNELS, t, height // VAE_SPACE, width // VAE_SPACE)
    audio_length = (int(sample_rate * frames / fps) - 1) // hop + 1
    latents = (math.prod(video_shape) * CONDITION_CHANNELS // VIDEO_LATENT_CHANNELS + audio_channels * audio_length)
    return forward_bytes(video_shape, (1, audio_channels, audio_length), video, audio, dtype_size) + \
        LATENT_COPIES * 4 * latents


def largest_fit(need: Callable[[int, int, int], int], width: int, height: int, frames: int,
                available: int) -> tuple[int | None, tuple[int, int] | None]:
    """(the most frames (4k+1) that fit at width x height, the largest width x height (multiples of 16, same
    aspect ratio) that fits at ``frames``); None where nothing does."""
    step = VAE_SPACE * PATCH
    lo, hi, best_frames = 0, (frames - 1) // VAE_TIME, None
    while lo <= hi:  # need() grows with the frame count
        mid = (lo + hi) // 2
        if need(width, height, mid * VAE_TIME + 1) <= available:
            best_frames, lo = mid * VAE_TIME + 1, mid + 1
        else:
            hi = mid - 1
    best_size = None
    for w in range(width - width % step, 0, -step):
        h = max(step, round(w * height / width / step) * step)
        if h <= height and need(w, h, frames) <= available:
            best_size = (w, h)
            break
    return best_frames, best_size


def amount(size: int) -> str:
    """A byte count for people: GiB with one decimal, MiB below a tenth of a GiB, KiB below a MiB."""
    if size >= GIB / 10:
        return f"{size / GIB:.1f} GiB"
    if size >= 2 ** 20:
        return f"{size / 2 ** 20:.0f} MiB"
    return f"{max(size, 0) / 2 ** 10:.0f} KiB"


def check_fits(need: Callable[[int, int, int], int], width: int, height: int, frames: int, available: int,
               what: str, fix: str) -> None:
    """Raise a ValueError naming the largest size that fits when width x height x frames needs more than
    ``available`` bytes of ``what``."""
    required = need(width, height, frames)
    if required <= available:
        return
    best_frames, best_size = largest_fit(need, width, height, frames, available)
    options = []
    if best_frames is not None:
        options.append(f"{best_frames} frames at {width}x{height}")
    if best_size is not None:
        options.append(f"{best_size[0]}x{best_size[1]} at {frames} frames")
    fits = "the largest that fits: " + " or ".join(options) if options else "not even one frame at 16x16 fits"
    raise ValueError(
        f"{width}x{height} with {frames} frames needs about {amount(required)} of {what}, but only "
        f"{amount(available)} are there; {fits}. {fix}"
    )
