"""MOVA's joint latent in ComfyUI core's audio-video form (what LTX-2 uses since ComfyUI v0.8.0).

One LATENT: ``samples`` is a ``comfy.nested_tensor.NestedTensor`` of (video [B,16,T,h,w] raw Wan 2.1 latents,
audio [B,C,L]), ``noise_mask`` (when any part is kept) a NestedTensor of the two masks (1 generate, 0 keep; MOVA
writes [B,1,T,1,1] and [B,1,L], core's nodes may write full shapes), and ``mova_av`` (``AVInfo``) says what the
audio is. Core's AV latent nodes (LTXV Concat / Separate AV Latent) and stock samplers carry the extra key along.

Plain Python: the NestedTensor class is looked up in the running ComfyUI when needed (none in v0.3.x).
"""

from __future__ import annotations

import torch

from .handles import AV_INFO_KEY, LATENT_AUDIO_KEY, NOISE_MASK_KEY, AudioLatent, AVInfo

NATIVE_NEEDS = (
    "MOVA's native sampling path (MOVA Guider and MOVA Scheduler with SamplerCustomAdvanced, on the av_latent of "
    "MOVA Conditioning) needs a ComfyUI whose LATENT can hold video and audio together (comfy.nested_tensor, "
    "ComfyUI v0.8.0 and later); this ComfyUI has none. Update ComfyUI, or sample with the MOVA Sampler "
    "(example_workflows/mova_i2va.json), which works here."
)


def nested_tensor_class():
    """ComfyUI's NestedTensor class, or None where this ComfyUI (or plain Python) has none."""
    try:
        from comfy.nested_tensor import NestedTensor
    except ImportError:
        return None
    return NestedTensor


def has_nested_latents() -> bool:
    """Whether the running ComfyUI carries nested (audio-video) latents: the native path needs it."""
    return nested_tensor_class() is not None


def require_nested_latents():
    """The NestedTensor class; a RuntimeError saying what to do where ComfyUI has none."""
    nested = nested_tensor_class()
    if nested is None:
        raise RuntimeError(NATIVE_NEEDS)
    return nested


def is_nested(x) -> bool:
    return getattr(x, "is_nested", False) is True and hasattr(x, "unbind")


def is_av_latent(latent) -> bool:
    """Whether ``latent`` is a LATENT in core's audio-video form."""
    return isinstance(latent, dict) and is_nested(latent.get("samples"))


def av_parts_of_mova(latent: dict) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple | None, AVInfo]:
    """MOVA's joint latent (video in ``samples``, the AudioLatent beside it) -> ((video, audio), (video mask,
    audio mask) or None, AVInfo). A part without a mask gets one of ones, so both masks travel together."""
    audio: AudioLatent = latent[LATENT_AUDIO_KEY]
    video = latent["samples"]
    info = AVInfo(audio.frames, audio.fps, audio.sample_rate, audio.hop_length, audio.given_waveform)
    video_mask, audio_mask = latent.get(NOISE_MASK_KEY), audio.noise_mask
    masks = None
    if video_mask is not None or audio_mask is not None:
        if video_mask is None:
            video_mask = torch.ones(video.shape[0], 1, video.shape[2], 1, 1)
        if audio_mask is None:
            audio_mask = torch.ones(audio.samples.shape[0], 1, audio.samples.shape[-1])
        masks = (video_mask, audio_mask)
    return (video, audio.samples), masks, info


def to_av_latent(latent: dict) -> dict:
    """MOVA's joint latent -> the same latent in core's audio-video form (needs ComfyUI's NestedTensor)."""
    nested = require_nested_latents()
    tensors, masks, info = av_parts_of_mova(latent)
    out = {"samples": nested(tensors), AV_INFO_KEY: info}
    if masks is not None:
        out[NOISE_MASK_KEY] = nested(masks)
    return out


def av_output(latent: dict) -> dict:
    """MOVA Conditioning's av_latent: ``latent`` in core's audio-video form where ComfyUI has nested latents, else
    ``latent`` itself (then the MOVA Guider explains what the native path needs; the MOVA Sampler takes either)."""
    return to_av_latent(latent) if has_nested_latents() else latent


def step_mask(mask: torch.Tensor | None, audio: torch.Tensor) -> torch.Tensor | None:
    """An audio noise mask as one value per latent step [B,1,L] (what MOVA Audio Decode spreads over the
    samples): a step is kept only where every channel is."""
    if mask is None:
        return None
    fits = mask.dim() == audio.dim() == 3 and all(m in (1, a) for m, a in zip(mask.shape, audio.shape))
    if not fits:
        raise ValueError(f"the audio noise mask {tuple(mask.shape)} does not fit the audio latent "
                         f"{tuple(audio.shape)}: give one value per latent step [B,1,L] (1 generate, 0 keep)")
    return mask.float().expand_as(audio).amax(dim=1, keepdim=True)


def split_av_latent(latent, name: str = "latent") -> tuple[torch.Tensor, AudioLatent, torch.Tensor | None]:
    """A LATENT in core's audio-video form with MOVA's audio -> (video [B,16,T,h,w], AudioLatent, video mask or
    None); a clear error for any other latent."""
    if not is_av_latent(latent):
        raise ValueError(f"{name}: expected the joint video+audio LATENT (MOVA Conditioning's av_latent, or what a "
                         "sampler made of it)")
    info = latent.get(AV_INFO_KEY)
    parts = latent["samples"].unbind()
    if not isinstance(info, AVInfo) or len(parts) != 2:
        raise ValueError(f"{name}: this audio-video latent is not MOVA's ({len(parts)} parts, no MOVA audio "
                         "description): build it with MOVA Conditioning's av_latent output")
    video, audio = parts
    masks = latent.get(NOISE_MASK_KEY)
    video_mask = audio_mask = None
    if masks is not None:
        if is_nested(masks):
            video_mask, audio_mask = (list(masks.unbind()) + [None])[:2]
        else:  # one plain mask: the video's, as ComfyUI's samplers read it
            video_mask = masks
    audio_latent = AudioLatent(audio, info.frames, info.fps, info.sample_rate, info.hop_length,
                               noise_mask=step_mask(audio_mask, audio), given_waveform=info.given_waveform)
    return video, audio_latent, video_mask
