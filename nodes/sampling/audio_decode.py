"""MOVA Audio Decode's logic: audio latents -> ComfyUI AUDIO trimmed to the video's length."""

from __future__ import annotations

import torch

from ...mova_model.sampling.audio import trim_to_video
from ...mova_model.sampling.known_regions import blend
from ..handles import AudioLatent, LoadedPart


def decode_to_audio(vae: LoadedPart, latent: AudioLatent, chunk_size: int = 0,
                    device: torch.device | str | None = None) -> dict:
    """AUDIO {"waveform": float32 [B,1,T] on the CPU in -1..1, "sample_rate"}, T = int(rate * frames / fps)."""
    if not isinstance(latent, AudioLatent):
        raise ValueError("audio_latent: expected the audio_latent output of the MOVA Sampler")
    dac = vae.model
    config = dac.config
    if latent.samples.shape[1] != config.latent_dim:
        raise ValueError(
            f"the audio latent has {latent.samples.shape[1]} channels but this audio VAE decodes {config.latent_dim}: "
            "use the audio VAE of the same MOVA release (the one given to MOVA Conditioning)."
        )
    if (latent.sample_rate, latent.hop_length) != (config.sample_rate, config.hop_length):
        raise ValueError(
            f"the audio latent was sized for a {latent.sample_rate} Hz codec with hop {latent.hop_length}, this audio "
            f"VAE is {config.sample_rate} Hz with hop {config.hop_length}: connect the audio VAE that MOVA "
            "Conditioning used."
        )
    if chunk_size < 0:
        raise ValueError(f"chunk_size must be 0 (all at once) or positive, got {chunk_size}")
    if device is None:
        device = next(dac.parameters()).device
    latents = latent.samples.to(device=device, dtype=vae.compute_dtype)
    with torch.no_grad():
        wave = dac.decode(latents) if chunk_size == 0 else dac.decode_chunked(latents, chunk_size)
    wave = trim_to_video(wave.float().clamp(-1, 1), latent.frames, latent.fps, config.sample_rate).cpu()
    if latent.given_waveform is not None and latent.noise_mask is not None:
        wave = put_back_given(wave, latent)
    return {"waveform": wave, "sample_rate": int(config.sample_rate)}


def put_back_given(wave: torch.Tensor, latent: AudioLatent) -> torch.Tensor:
    """The decoded waveform [B,1,T] with the given sound over the kept latent steps (the noise mask, 1 generate,
    0 keep, spread over each step's ``hop_length`` samples): there the output is the given sound exactly."""
    given = latent.given_waveform.to(wave)
    if given.shape != wave.shape:
        raise ValueError(f"the given sound {tuple(given.shape)} does not fit the decoded audio {tuple(wave.shape)}: "
                         "build the latent with MOVA Conditioning")
    mask = latent.noise_mask.float().repeat_interleave(latent.hop_length, dim=-1)[..., :wave.shape[-1]]
    return blend(wave, given, mask)
