"""MOVA Sampler's logic: wiring checks, the seeded joint sampling run, and the memory it needs."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..mova_model.attention import resolve_attention_backend
from ..mova_model.configs import DiTConfig
from ..mova_model.known_regions import KnownLatents, blend
from ..mova_model.latents import denormalise_video_latents, normalise_video_latents
from ..mova_model.sampler import MovaTowers, SamplingOptions, make_noise, sample
from ..mova_model.speed import check_speed_options
from .handles import (HIGH_NOISE, LATENT_AUDIO_KEY, LOW_NOISE, NOISE_MASK_KEY, AudioLatent, LoadedPart,
                      MovaConditioning, SamplerSettings)

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


def check_roles(high: LoadedPart, low: LoadedPart) -> None:
    """The experts' files say which is which: refuse swapped connections with the fix."""
    for slot, part, wrong in (("high_noise_expert", high, LOW_NOISE), ("low_noise_expert", low, HIGH_NOISE)):
        if part.role == wrong:
            raise ValueError(
                f"{slot} got {ROLE_NAMES[wrong]} ({part.source}): swap the two expert loaders' connections."
            )


def check_setup(high: LoadedPart, low: LoadedPart, tower: LoadedPart, cond: MovaConditioning,
                video: torch.Tensor, audio: AudioLatent) -> MovaTowers:
    """Raise a ValueError saying what to change when the parts do not belong together; else the towers."""
    check_roles(high, low)
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


def make_settings(bridge_cfg: float, audio_cfg: float, audio_shift: float, cfg_cutoff: float,
                  cache_threshold: float, attention: str = "auto", compile: str = "off",
                  fp8_compute: str = "auto", device=None, given_modality: str = "renoised") -> SamplerSettings:
    """MOVA Sampler Options' widgets as settings: audio_cfg / audio_shift 0 mean the sampler's cfg / shift.
    An attention backend that cannot run on ``device`` (the sampling device) is refused here."""
    if given_modality not in ("renoised", "clean"):
        raise ValueError(f"given_modality {given_modality!r} is not one of renoised, clean")
    settings = SamplerSettings(bridge_cfg=bridge_cfg, audio_cfg=audio_cfg or None, audio_shift=audio_shift or None,
                               cfg_cutoff=cfg_cutoff, cache_threshold=cache_threshold, attention=attention,
                               compile=compile, fp8_compute=fp8_compute, clean_given=given_modality == "clean")
    resolve_attention_backend(attention, device)
    sampling_options(1, 5.0, 5.0, 0.9, 24.0, settings)  # the same checks the sampler makes, here at the source
    return settings


def sampling_options(steps: int, cfg: float, shift: float, boundary_ratio: float, fps: float,
                     settings: SamplerSettings | None = None) -> SamplingOptions:
    """The core sampler's options from the MOVA Sampler's widgets and MOVA Sampler Options (None: official)."""
    if settings is not None and not isinstance(settings, SamplerSettings):
        raise ValueError("options: expected the output of MOVA Sampler Options")
    s = settings or SamplerSettings()
    if not 0.0 <= s.cfg_cutoff <= 1.0:
        raise ValueError(f"cfg_cutoff {s.cfg_cutoff} must lie in 0..1 (the share of steps that use CFG)")
    if s.cache_threshold < 0:
        raise ValueError(f"cache_threshold {s.cache_threshold} must be 0 (off) or positive")
    if s.audio_shift is not None and s.audio_shift <= 0:
        raise ValueError(f"audio_shift {s.audio_shift} must be positive (or unset: the sampler's shift)")
    check_speed_options(s.compile, s.fp8_compute)
    return SamplingOptions(steps=steps, cfg_scale=cfg, shift=shift, boundary_ratio=boundary_ratio, fps=fps,
                           audio_cfg_scale=s.audio_cfg, audio_shift=s.audio_shift, bridge_cfg_scale=s.bridge_cfg,
                           cfg_cutoff=s.cfg_cutoff, cache_threshold=s.cache_threshold, attention=s.attention,
                           compile=s.compile, fp8_compute=s.fp8_compute, clean_given=s.clean_given)


def needs_negative(options: SamplingOptions) -> bool:
    """Whether any text CFG is on (for video or audio): then the negative prompt is used."""
    audio = options.cfg_scale if options.audio_cfg_scale is None else options.audio_cfg_scale
    return options.cfg_scale != 1.0 or audio != 1.0


def cache_report(stats: dict) -> str:
    """One line on step caching: how many steps reused the previous result."""
    computed, skipped = stats.get("computed_steps", 0), stats.get("skipped_steps", 0)
    total = computed + skipped
    share = skipped / total if total else 0.0
    return f"step caching skipped {skipped} of {total} steps ({share:.0%})"


def sample_joint(high: LoadedPart, low: LoadedPart, tower: LoadedPart, cond: MovaConditioning, latent: dict,
                 seed: int, steps: int, cfg: float, shift: float, boundary_ratio: float,
                 device: torch.device | str | None = None,
                 before_expert: Callable[[int], None] | None = None,
                 on_step: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
                 settings: SamplerSettings | None = None, stats: dict | None = None,
                 ) -> tuple[dict, AudioLatent]:
    """Denoise MOVA's joint latent from seeded noise. Returns the video as a ComfyUI LATENT (raw Wan 2.1
    latents, float32, CPU) and the audio latents. ``before_expert(i)`` runs before expert i (0 high,
    1 low) is first used; ``on_step(step, total, video, audio)`` after every step (raise to cancel).
    ``settings`` come from MOVA Sampler Options; ``stats`` receives computed_steps / skipped_steps."""
    video, audio = split_joint_latent(latent)
    towers = check_setup(high, low, tower, cond, video, audio)
    video_noise, audio_noise = make_noise(video.shape, audio.samples.shape, seed)
    options = sampling_options(steps, cfg, shift, boundary_ratio, cond.fps, settings)
    negative = cond.context_neg if needs_negative(options) else None
    video_mask = latent.get(NOISE_MASK_KEY)
    known_video = None if video_mask is None else KnownLatents(normalise_video_latents(video), video_mask.float())
    known_audio = None if audio.noise_mask is None else KnownLatents(audio.samples.float(), audio.noise_mask.float())
    out_video, out_audio = sample(
        towers, cond.condition, cond.context_pos, negative, video_noise, audio_noise, options,
        callback=on_step, before_expert=before_expert, dtype=high.compute_dtype, device=device, stats=stats,
        known_video=known_video, known_audio=known_audio,
    )
    raw = denormalise_video_latents(out_video).cpu()
    if video_mask is not None:  # the given raw latents exactly, not a normalisation round trip
        raw = blend(raw, video.float().cpu(), video_mask.float().cpu())
    video_latent = {"samples": raw}
    audio_latent = AudioLatent(out_audio.float().cpu(), audio.frames, audio.fps, audio.sample_rate, audio.hop_length,
                               noise_mask=audio.noise_mask, given_waveform=audio.given_waveform)
    return video_latent, audio_latent
