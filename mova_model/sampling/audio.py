"""From audio latents to a waveform that lasts exactly as long as the video."""

from __future__ import annotations

import torch

from ..networks.dac import DAC
from .sizes import audio_num_samples


def trim_to_video(waveform: torch.Tensor, frames: int, fps: float, sample_rate: int) -> torch.Tensor:
    """Cut [B,C,T] to int(sample_rate * frames / fps) samples (the codec returns up to a hop more)."""
    wanted = audio_num_samples(frames, fps, sample_rate)
    if waveform.shape[-1] < wanted:
        raise ValueError(
            f"the audio has {waveform.shape[-1]} samples but {frames} frames at {fps} fps need {wanted}: "
            "the audio latent was made for a shorter video; build the latent with the same length and fps"
        )
    return waveform[..., :wanted]


@torch.no_grad()
def decode_audio(dac: DAC, latents: torch.Tensor, frames: int, fps: float, chunk: int | None = None) -> torch.Tensor:
    """Audio latents [B,C,L] -> waveform [B,1,T] in [-1,1], float32, trimmed to the video's length.

    ``chunk`` (latent steps) decodes piece by piece with exact overlap, for low memory.
    """
    param = next(dac.parameters())
    latents = latents.to(device=param.device, dtype=param.dtype)
    wave = dac.decode(latents) if chunk is None else dac.decode_chunked(latents, chunk)
    return trim_to_video(wave.float().clamp(-1, 1), frames, fps, dac.config.sample_rate)
