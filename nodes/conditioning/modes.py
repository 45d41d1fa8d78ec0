"""MOVA Conditioning beyond image-to-video: a last frame (first + last frame), a given sound (speech or sound ->
video) and a given video (video -> audio). MOVA was not trained for these; they use its architecture as is:
the I2V condition takes any known frames, and the joint latent's noise masks keep given latents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ...mova_model.configs import DACConfig
from ..handles import LATENT_AUDIO_KEY, NOISE_MASK_KEY, AudioLatent, MovaConditioning
from .audio_input import fit_audio, known_audio_latents
from .condition import batch_note, build_condition, check_sizes, empty_joint_latent, fit_frame, prompt_states
from .keyframes import fold_known_frames, keyframe_video
from .video_input import fit_video, take_video

Encode = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Prepared:
    """MOVA Conditioning's outputs and what it did with the given inputs."""

    conditioning: MovaConditioning
    latent: dict
    video: torch.Tensor | None = None   # the given video's frames the clip covers, at their own size
    report: list[str] = field(default_factory=list)


def _check_combination(image, end_image, audio, video) -> None:
    if video is None:
        return
    for name, value in (("start_image", image), ("end_image", end_image)):
        if value is not None:
            raise ValueError(f"{name} and video are both connected: the video's own frames are the clip; "
                             f"disconnect {name}")
    if audio is not None:
        raise ValueError("audio and video are both connected: there would be nothing left to generate; connect "
                         "the audio for speech/sound -> video, or the video for video -> audio")


def prepare_conditioning(positive, negative, encode: Encode, image: torch.Tensor | None, width: int, height: int,
                         frames: int, fps: float, dac: DACConfig, *, end_image: torch.Tensor | None = None,
                         audio: dict | None = None, video: torch.Tensor | None = None,
                         video_fps: float | None = None, encode_audio: Encode | None = None,
                         warnings: list[str] | None = None, available_bytes: int | None = None) -> Prepared:
    """Everything MOVA Conditioning outputs. ``encode`` is the Wan VAE (frames [F,H,W,3] -> raw latents),
    ``encode_audio`` the DAC (waveform [1,1,T] -> latents [1,C,L]), needed only with ``audio``; ``warnings`` and
    ``available_bytes`` as for ``make_conditioning``."""
    check_sizes(width, height, frames, fps, available_bytes)
    _check_combination(image, end_image, audio, video)
    pos, neg = prompt_states(positive, negative, warnings)
    report = []
    used = fitted = None
    if video is not None:
        used, note = take_video(video, frames, fps, video_fps)
        fitted = fit_video(used, width, height)
        report.append(note)
    start = fitted[:1] if fitted is not None else (None if image is None else fit_frame(image, width, height)[None])
    notes = [batch_note(image, "start_image", "first"), batch_note(end_image, "end_image", "last")]
    report += [note for note in notes if note is not None]
    if isinstance(end_image, torch.Tensor) and end_image.dim() == 4:
        end_image = end_image[-1:]  # the last image of a batch
    end = None if end_image is None else fit_frame(end_image, width, height, "end_image")[None]
    pixels, known = keyframe_video(frames, width, height, start, end)
    condition = build_condition(encode(pixels), width, height, frames, fold_known_frames(known))
    latent = empty_joint_latent(width, height, frames, fps, dac)
    if fitted is not None:  # video -> audio: the whole video is kept
        raw = encode(fitted).float().cpu()
        if raw.shape != latent["samples"].shape:
            raise ValueError(f"the VAE turned the video into latents {tuple(raw.shape)}, MOVA needs "
                             f"{tuple(latent['samples'].shape)}: connect the Wan 2.1 VAE")
        latent["samples"] = raw
        latent[NOISE_MASK_KEY] = torch.zeros(1, 1, raw.shape[2], 1, 1)
    if audio is not None:  # sound -> video: the whole sound is kept
        if encode_audio is None:
            raise ValueError("audio needs the audio VAE to encode it")
        fitted_audio = fit_audio(audio, "audio", frames, fps, dac.sample_rate)
        report.append(fitted_audio.report)
        latents = known_audio_latents(encode_audio(fitted_audio.waveform), frames, fps, dac, "audio")
        empty: AudioLatent = latent[LATENT_AUDIO_KEY]
        latent[LATENT_AUDIO_KEY] = AudioLatent(latents, empty.frames, empty.fps, empty.sample_rate, empty.hop_length,
                                               noise_mask=torch.zeros(1, 1, latents.shape[-1]),
                                               given_waveform=fitted_audio.waveform)
    cond = MovaConditioning(pos, neg, condition, width, height, frames, float(fps))
    return Prepared(cond, latent, used, report)
