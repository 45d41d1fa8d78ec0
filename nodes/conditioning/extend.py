"""Longer clips: MOVA Extend sets up the next clip on the end of the clip so far, MOVA Join appends it.

Timeline: the next clip (``length`` frames) starts ``overlap`` frames before the end of the clip so far (N frames).
Its first ``overlap`` frames are the clip so far's last ones (known frames in the I2V condition, their latent
frames kept) and its sound over them is the clip so far's sound (kept audio latents). Joined, the video has
N + length - overlap frames: the overlap frames are dropped from the new clip. The sound keeps the clip so far
whole and continues with the new clip's sound from the point where its new frames start; over the last
``crossfade`` samples before that point, where both clips carry the same sound (the new clip kept it), it fades
from the old to the new one, so no edge of either decode is heard. Its length is int(rate * frames / fps),
exactly as for a single clip.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ...mova_model.configs import DACConfig
from ...mova_model.sampling.sizes import (
    PATCH,
    VAE_SPACE,
    VAE_TIME,
    _nearest_valid,
    audio_latent_length,
    audio_num_samples,
)
from ..handles import LATENT_AUDIO_KEY, NOISE_MASK_KEY, AudioLatent, Extension, MovaConditioning
from ..media_values import image_pixels
from .audio_input import audio_waveform
from .condition import build_condition, empty_joint_latent, prompt_states
from .keyframes import fold_known_frames, keyframe_video, known_latent_frames

Encode = Callable[[torch.Tensor], torch.Tensor]


def clip_frames(images, name: str) -> torch.Tensor:
    """IMAGE frames [N,H,W,3] (float32 0..1, CPU; 8- and 16-bit, grey and RGBA frames converted: media_values.py);
    a clear error for anything else."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or min(images.shape) < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name}: expected IMAGE frames [N,H,W,3] (VAE Decode or MOVA Join), got {shape}")
    return image_pixels(images.cpu(), name)


def mono_codec_sound(audio, name: str, rate: int, fix: str) -> torch.Tensor:
    """The AUDIO's waveform [1,1,T]; it must be mono at the codec's ``rate`` (as MOVA makes it)."""
    wave, source_rate = audio_waveform(audio, name)
    if source_rate != rate:
        raise ValueError(f"{name} is at {source_rate} Hz but the audio VAE at {rate} Hz: {fix}")
    if wave.shape[0] != 1:
        raise ValueError(f"{name} has {wave.shape[0]} channels, MOVA's sound is mono: {fix}")
    return wave[None]


def joined_sizes(before: int, length: int, overlap: int, fps: float, rate: int) -> tuple[int, int]:
    """(frames, samples) of the clip so far (``before`` frames) with the next clip appended."""
    frames = before + length - overlap
    return frames, audio_num_samples(frames, fps, rate)


def overlap_samples(before: int, length: int, overlap: int, fps: float, rate: int) -> int:
    """Where the next clip's sound continues the joined sound: its sample at the end of the clip so far.

    Chosen so that the joined sound has exactly int(rate * frames / fps) samples; it is within two samples of
    rate * overlap / fps, the overlap's duration."""
    _, total = joined_sizes(before, length, overlap, fps, rate)
    return audio_num_samples(length, fps, rate) - (total - audio_num_samples(before, fps, rate))


def check_overlap(overlap: int, length: int, before: int) -> None:
    """Raise a ValueError with the value to use when the overlap does not fit the clips."""
    if length < 1 or (length - 1) % VAE_TIME:
        raise ValueError(f"length {length} is not 4k+1: use {_nearest_valid(length, VAE_TIME, 1)}")
    if overlap < 1 or (overlap - 1) % VAE_TIME:
        raise ValueError(f"overlap {overlap} is not 4k+1: use {_nearest_valid(overlap, VAE_TIME, 1)}")
    if overlap >= length:
        raise ValueError(f"overlap {overlap} is not shorter than length {length}: the next clip would add no frames; "
                         f"use an overlap of at most {length - VAE_TIME} or a longer length")
    if overlap > before:
        most = (before - 1) // VAE_TIME * VAE_TIME + 1
        raise ValueError(f"overlap {overlap} is longer than the clip so far ({before} frames): use at most {most}")


def prepare_extension(positive, negative, encode: Encode, encode_audio: Encode, dac: DACConfig, images, audio,
                      length: int, overlap: int, fps: float, crossfade: float
                      ) -> tuple[MovaConditioning, dict, Extension, str]:
    """MOVA Extend's outputs (conditioning, joint latent with the overlap kept, the Extension for MOVA Join) and
    a report. ``encode``: Wan VAE, frames [F,H,W,3] -> raw latents; ``encode_audio``: DAC, [1,1,T] -> [1,C,L]."""
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}: connect MOVA Conditioning's fps")
    if not math.isfinite(crossfade) or crossfade < 0:
        raise ValueError(f"crossfade {crossfade:g} s must be 0 (a hard cut) or a positive number of seconds")
    frames = clip_frames(images, "images")
    before, height, width = frames.shape[:3]
    step = VAE_SPACE * PATCH
    if height % step or width % step:
        raise ValueError(f"images are {width}x{height}, not multiples of {step}: extend clips made by MOVA (VAE "
                         "Decode or MOVA Join), or resize the frames to multiples of 16 first")
    check_overlap(overlap, length, before)
    rate, hop = dac.sample_rate, dac.hop_length
    wave = mono_codec_sound(audio, "audio", rate, "connect the clip's sound from MOVA Audio Decode (or the previous "
                            "MOVA Join)")
    have, expected = wave.shape[-1], audio_num_samples(before, fps, rate)
    if have != expected:
        raise ValueError(
            f"the sound has {have} samples ({have / rate:.3f} s) but {before} frames at {fps:g} fps need {expected} "
            f"({before / fps:.3f} s), as if the frames ran at {rate * before / have:.3f} fps: set fps to the clip's "
            "frame rate (connect MOVA Conditioning's fps) and connect the sound of these frames"
        )
    k = overlap_samples(before, length, overlap, fps, rate)
    fade = round(crossfade * rate)
    if fade > k:
        raise ValueError(f"crossfade {crossfade:g} s is longer than the overlap's {k / rate:.3f} s of sound: use at "
                         f"most {int(k / rate * 100) / 100:g} s, or a longer overlap")
    pos, neg = prompt_states(positive, negative)

    # video: the overlap frames lead the condition and their latent frames are kept
    pixels, known = keyframe_video(length, width, height, start=frames[before - overlap:])
    encoded = encode(pixels).float().cpu()
    condition = build_condition(encoded, width, height, length, fold_known_frames(known))
    latent = empty_joint_latent(width, height, length, fps, dac)
    kept = known_latent_frames(known)
    latent["samples"][:, :, kept] = encoded[:, :, kept]
    mask = torch.ones(1, 1, latent["samples"].shape[2], 1, 1)
    mask[:, :, kept] = 0
    latent[NOISE_MASK_KEY] = mask

    # sound: the latent steps lying wholly inside the overlap are kept, encoded with some sound before them
    steps = audio_latent_length(length, fps, dac)
    keep = min(k // hop, steps)
    context = min((have - k) // hop, keep)
    start = have - k - context * hop
    encoded_audio = encode_audio(wave[..., start:]).float().cpu()
    samples = torch.zeros(1, dac.latent_dim, steps)
    samples[..., :keep] = encoded_audio[..., context:context + keep]
    audio_mask = torch.ones(1, 1, steps)
    audio_mask[..., :keep] = 0
    latent[LATENT_AUDIO_KEY] = AudioLatent(samples, length, float(fps), rate, hop, noise_mask=audio_mask)

    cond = MovaConditioning(pos, neg, condition, width, height, length, float(fps))
    extension = Extension(frames, wave, rate, float(fps), overlap, length, k, fade)
    total, _ = joined_sizes(before, length, overlap, fps, rate)
    report = (f"next clip: {length} frames ({length / fps:.2f} s); its first {overlap} ({overlap / fps:.2f} s) are "
              f"the end of the clip so far: {int(kept.sum())} video latent frames and {keep} audio latent steps "
              f"({keep * hop / rate:.2f} s) kept; joined: {total} frames ({total / fps:.2f} s)")
    return cond, latent, extension, report


def crossfade_join(before: torch.Tensor, after: torch.Tensor, at: int, fade: int) -> torch.Tensor:
    """``before`` [1,1,Tb] then ``after`` [1,1,Ta] from its sample ``at`` on, fading linearly from ``before`` to
    ``after``[at - fade : at] over the last ``fade`` samples of ``before``: [1,1,Tb + Ta - at]."""
    end = before.shape[-1]
    if fade == 0:
        return torch.cat([before, after[..., at:]], dim=-1)
    ramp = (torch.arange(fade, dtype=torch.float32) + 0.5) / fade
    blended = before[..., end - fade:] * (1 - ramp) + after[..., at - fade:at] * ramp
    return torch.cat([before[..., :end - fade], blended, after[..., at:]], dim=-1)


def join_clips(extension: Extension, images, audio) -> tuple[torch.Tensor, dict]:
    """The clip so far with the new clip appended: (IMAGE [N + length - overlap,H,W,3], AUDIO)."""
    if not isinstance(extension, Extension):
        raise ValueError("extension: expected the extension output of MOVA Extend")
    ext = extension
    frames = clip_frames(images, "images")
    if frames.shape[0] != ext.length or frames.shape[1:] != ext.frames.shape[1:]:
        raise ValueError(
            f"images are {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}, the clip MOVA Extend set "
            f"up has {ext.length} of {ext.frames.shape[2]}x{ext.frames.shape[1]}: connect VAE Decode of the MOVA "
            "Sampler that sampled MOVA Extend's latent"
        )
    wave = mono_codec_sound(audio, "audio", ext.sample_rate, "connect MOVA Audio Decode of the new clip")
    expected = audio_num_samples(ext.length, ext.fps, ext.sample_rate)
    if wave.shape[-1] != expected:
        raise ValueError(f"the new clip's sound has {wave.shape[-1]} samples, {ext.length} frames at {ext.fps:g} fps "
                         f"need {expected}: connect MOVA Audio Decode of the clip sampled from MOVA Extend's latent")
    joined = torch.cat([ext.frames, frames[ext.overlap:]])
    sound = crossfade_join(ext.waveform, wave, ext.overlap_samples, ext.crossfade)
    return joined, {"waveform": sound, "sample_rate": ext.sample_rate}
