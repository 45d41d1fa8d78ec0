"""Sizes of a MOVA generation: validation with the nearest valid values, latent shapes, audio length."""

from __future__ import annotations

from dataclasses import dataclass

from ..configs import DACConfig

VAE_SPACE, VAE_TIME, PATCH = 8, 4, 2
VIDEO_LATENT_CHANNELS = 16


def _nearest_valid(value: int, base: int, offset: int = 0) -> str:
    """'N' or 'N (or M)': the nearest value of the form k*base + offset, the other neighbour second."""
    lower = max(offset or base, (value - offset) // base * base + offset)
    upper = lower + base if lower <= value else lower
    nearest, other = (lower, upper) if value - lower <= upper - value else (upper, lower)
    return f"{nearest}" if other == nearest or value < base else f"{nearest} (or {other})"


def check_video_size(height: int, width: int, frames: int) -> None:
    """Raise ValueError naming the nearest valid value when a size does not fit MOVA."""
    step = VAE_SPACE * PATCH
    for name, value in (("height", height), ("width", width)):
        if value < step or value % step:
            raise ValueError(f"{name} {value} is not a multiple of {step}: use {_nearest_valid(value, step)}")
    if frames < 1 or (frames - 1) % VAE_TIME:
        raise ValueError(f"frames {frames} is not 4k+1: use {_nearest_valid(frames, VAE_TIME, 1)}")


def audio_num_samples(frames: int, fps: float, sample_rate: int) -> int:
    """Audio samples that last as long as the video: int(sample_rate * frames / fps)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return int(sample_rate * frames / fps)


def audio_latent_length(frames: int, fps: float, dac: DACConfig) -> int:
    """Audio latent steps covering the video: (samples - 1) // hop + 1."""
    return (audio_num_samples(frames, fps, dac.sample_rate) - 1) // dac.hop_length + 1


@dataclass(frozen=True)
class LatentShapes:
    video: tuple[int, int, int, int, int]
    audio: tuple[int, int, int]


def latent_shapes(batch: int, height: int, width: int, frames: int, fps: float,
                  dac: DACConfig, audio_channels: int) -> LatentShapes:
    """Shapes of the video latents [B,16,T',H/8,W/8] and audio latents [B,C,L]."""
    check_video_size(height, width, frames)
    t = (frames - 1) // VAE_TIME + 1
    video = (batch, VIDEO_LATENT_CHANNELS, t, height // VAE_SPACE, width // VAE_SPACE)
    return LatentShapes(video=video, audio=(batch, audio_channels, audio_latent_length(frames, fps, dac)))
