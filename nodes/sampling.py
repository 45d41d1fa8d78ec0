"""MOVA Sampler's logic: wiring checks, the seeded joint sampling run, and the memory it needs."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..mova_model.configs import DiTConfig
from ..mova_model.latents import denormalise_video_latents
from ..mova_model.sampler import MovaTowers, SamplingOptions, make_noise, sample
from .handles import HIGH_NOISE, LATENT_AUDIO_KEY, LOW_NOISE, AudioLatent, LoadedPart, MovaConditioning

ROLE_NAMES = {HIGH_NOISE: "the high-noise expert (video_dit)", LOW_NOISE: "the low-noise expert (video_dit_2)"}


def split_joint_latent(latent) -> tuple[torch.Tensor, AudioLatent]:
    """(video latents [B,16,T,h,w], AudioLatent) of MOVA's joint LATENT; a clear error for any other latent."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError("latent: expected a LATENT; connect the latent output of MOVA Conditioning")
    audio = latent.get(LATENT_AUDIO_KEY)
    if not isinstance(audio, AudioLatent):
        raise ValueError(
            f"latent has no audio part (shape {tuple(latent['samples'].shape)}): it comes from another node, not "
            "MOVA Conditioning. Connect MOVA Conditioning's latent output to the MOVA Sampler."
        )
    return latent["samples"], audio


def check_setup(high: LoadedPart, low: LoadedPart, tower: LoadedPart, cond: MovaConditioning,
                video: torch.Tensor, audio: AudioLatent) -> MovaTowers:
    """Raise a ValueError saying what to change when the parts do not belong together; else the towers."""
    for slot, part, wrong in (("high_noise_expert", high, LOW_NOISE), ("low_noise_expert", low, HIGH_NOISE)):
        if part.role == wrong:
            raise ValueError(
                f"{slot} got {ROLE_NAMES[wrong]} ({part.source}): swap the two expert loaders' connections."
            )
    audio_dit, bridge = tower.model.audio_dit, tower.model.bridge
    towers = MovaTowers([high.model, low.model], audio_dit, bridge)
    text_dim = high.model.config.text_dim
    if cond.context_pos.shape[-1] != text_dim:
        raise ValueError(
            f"the prompt has {cond.context_pos.shape[-1]} features per token, MOVA needs {text_dim} (UMT5-XXL): "
            "load umt5_xxl_fp8_e4m3fn_scaled.safetensors (or umt5_xxl_fp16) with CLIP Loader, type wan."
        )
    if tuple(cond.condition.shape[2:]) != tuple(video.shape[2:]):
        raise ValueError(
            f"the conditioning is for latents {tuple(cond.condition.shape[2:])} but the latent is "
            f"{tuple(video.shape[2:])}: connect the conditioning and latent of the same MOVA Conditioning node."
        )
    if (audio.frames, audio.fps) != (cond.frames, cond.fps):
        raise ValueError(
            f"the latent is for {audio.frames} frames at {audio.fps:g} fps but the conditioning for {cond.frames} at "
            f"{cond.fps:g}: connect the conditioning and latent of the same MOVA Conditioning node."
        )
    if audio.samples.shape[1] != audio_dit.config.in_dim:
        raise ValueError(
            f"the audio VAE makes {audio.samples.shape[1]}-channel latents but the audio DiT takes "
            f"{audio_dit.config.in_dim}: load the audio VAE and the audio tower from the same MOVA release."
        )
    codec_rate = audio.sample_rate / audio.hop_length
    if not math.isclose(codec_rate, bridge.config.audio_fps, rel_tol=1e-6):
        raise ValueError(
            f"the audio VAE runs at {codec_rate:g} latents/s ({audio.sample_rate} Hz / hop {audio.hop_length}) but "
            f"the audio tower was trained at {bridge.config.audio_fps:g}: load the audio VAE of the same MOVA release."
        )
    return towers


def activation_bytes(video_shape, audio_shape, video: DiTConfig, audio: DiTConfig, dtype: torch.dtype) -> int:
    """Rough peak activation memory of one joint forward: the FFN hidden and a few copies of the tokens."""
    b, _, t, h, w = video_shape
    video_tokens = (t // video.patch_size[0]) * (h // video.patch_size[1]) * (w // video.patch_size[2])
    audio_tokens = audio_shape[-1] // audio.patch_size[0]
    size = torch.empty((), dtype=dtype).element_size()
    per_sample = video_tokens * (video.ffn_dim + 6 * video.dim) + audio_tokens * (audio.ffn_dim + 6 * audio.dim)
    return int(b * per_sample * size)


def sample_joint(high: LoadedPart, low: LoadedPart, tower: LoadedPart, cond: MovaConditioning, latent: dict,
                 seed: int, steps: int, cfg: float, shift: float, boundary_ratio: float,
                 device: torch.device | str | None = None,
                 before_expert: Callable[[int], None] | None = None,
                 on_step: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
                 ) -> tuple[dict, AudioLatent]:
    """Denoise MOVA's joint latent from seeded noise. Returns the video as a ComfyUI LATENT (raw Wan 2.1
    latents, float32, CPU) and the audio latents. ``before_expert(i)`` runs before expert i (0 high,
    1 low) is first used; ``on_step(step, total, video, audio)`` after every step (raise to cancel)."""
    video, audio = split_joint_latent(latent)
    towers = check_setup(high, low, tower, cond, video, audio)
    video_noise, audio_noise = make_noise(video.shape, audio.samples.shape, seed)
    options = SamplingOptions(steps=steps, cfg_scale=cfg, shift=shift, boundary_ratio=boundary_ratio, fps=cond.fps)
    negative = None if cfg == 1.0 else cond.context_neg
    out_video, out_audio = sample(
        towers, cond.condition, cond.context_pos, negative, video_noise, audio_noise, options,
        callback=on_step, before_expert=before_expert, dtype=high.compute_dtype, device=device,
    )
    video_latent = {"samples": denormalise_video_latents(out_video).cpu()}
    audio_latent = AudioLatent(out_audio.float().cpu(), audio.frames, audio.fps, audio.sample_rate, audio.hop_length)
    return video_latent, audio_latent
