"""MOVA Conditioning's logic: text states, the image-to-video condition and the empty joint latent."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..mova_model.configs import DACConfig
from ..mova_model.latents import normalise_video_latents
from ..mova_model.sizes import VAE_SPACE, VAE_TIME, VIDEO_LATENT_CHANNELS, check_video_size, latent_shapes
from .handles import LATENT_AUDIO_KEY, AudioLatent, MovaConditioning

MASK_CHANNELS = 4
GREY = 0.5   # the frames after the first, in ComfyUI's 0..1 image range
WHITE = 1.0  # the first frame when no image is given (the official text-only recipe)


def text_states(conditioning, name: str) -> torch.Tensor:
    """The text-encoder states [B,L,D] of a CONDITIONING from CLIP Text Encode."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ValueError(f"{name}: expected a CONDITIONING from CLIP Text Encode, got {type(conditioning).__name__}")
    if len(conditioning) != 1:
        raise ValueError(
            f"{name} holds {len(conditioning)} conditionings (from Conditioning Combine or Concat): MOVA takes "
            "one prompt; write it in one CLIP Text Encode."
        )
    entry = conditioning[0]
    states = entry[0] if isinstance(entry, (list, tuple)) and entry else None
    if not isinstance(states, torch.Tensor) or states.dim() != 3:
        raise ValueError(f"{name}: expected text states [B,L,D] from CLIP Text Encode, got {type(states).__name__}")
    return states.float().cpu()


def fit_frame(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE [B,H0,W0,C] or [H0,W0,C] in 0..1 -> its first image [height,width,3]: centre crop to the
    target aspect ratio, then bilinear resize."""
    if image.dim() == 4:
        image = image[0]
    if image.dim() != 3 or image.shape[-1] < 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(
            f"start_image must be an IMAGE [B,H,W,3] with at least one pixel, got shape {tuple(image.shape)}: "
            "connect Load Image (or leave start_image empty for a white first frame)"
        )
    src_h, src_w = image.shape[0], image.shape[1]
    if src_w * height > width * src_h:      # too wide: crop the sides
        crop_w = round(src_h * width / height)
        left = (src_w - crop_w) // 2
        image = image[:, left:left + crop_w]
    elif src_w * height < width * src_h:    # too tall: crop top and bottom
        crop_h = round(src_w * height / width)
        top = (src_h - crop_h) // 2
        image = image[top:top + crop_h]
    chw = image[..., :3].permute(2, 0, 1)[None].float()
    resized = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False)
    return resized[0].permute(1, 2, 0).clamp(0, 1)


def condition_frames(image: torch.Tensor | None, width: int, height: int, frames: int) -> torch.Tensor:
    """The frames the VAE encodes for the condition [frames,height,width,3]: the start image (white when
    None), then mid-grey frames."""
    check_video_size(height, width, frames)
    video = torch.full((frames, height, width, 3), GREY)
    video[0] = WHITE if image is None else fit_frame(image.cpu(), width, height)
    return video


def build_condition(encoded: torch.Tensor, width: int, height: int, frames: int,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Raw Wan 2.1 latents of the condition frames [1,16,T,h,w] -> MOVA's condition [1,20,T,h,w]:
    4 mask channels (1 on latent frame 0, or ``mask`` [1,4,T,1|h,1|w] for other known frames), then the
    normalised latents."""
    expected = (1, VIDEO_LATENT_CHANNELS, (frames - 1) // VAE_TIME + 1, height // VAE_SPACE, width // VAE_SPACE)
    if tuple(encoded.shape) != expected:
        raise ValueError(
            f"the VAE turned {frames} frames of {width}x{height} into latents {tuple(encoded.shape)}, "
            f"MOVA needs {expected}: connect the Wan 2.1 VAE (wan_2.1_vae.safetensors), not the Wan 2.2 or "
            "another VAE."
        )
    latents = normalise_video_latents(encoded.cpu())
    if mask is None:
        mask = torch.zeros(1, MASK_CHANNELS, *latents.shape[2:])
        mask[:, :, 0] = 1.0
    mask = mask.float().expand(1, MASK_CHANNELS, *latents.shape[2:])
    return torch.cat([mask, latents], dim=1)


def empty_joint_latent(width: int, height: int, frames: int, fps: float, dac: DACConfig) -> dict:
    """ComfyUI LATENT for MOVA: zero video latents [1,16,T,h,w] in ``samples`` and zero audio latents
    [1,C,L] under LATENT_AUDIO_KEY, L covering ``frames`` at ``fps`` at the codec's rate."""
    shapes = latent_shapes(1, height, width, frames, fps, dac, dac.latent_dim)
    audio = AudioLatent(torch.zeros(shapes.audio), frames, float(fps), dac.sample_rate, dac.hop_length)
    return {"samples": torch.zeros(shapes.video), LATENT_AUDIO_KEY: audio}


def prompt_states(positive, negative) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive and negative text states [B,L,D], from the same text encoder."""
    pos, neg = text_states(positive, "positive"), text_states(negative, "negative")
    if pos.shape[-1] != neg.shape[-1]:
        raise ValueError(
            f"positive and negative come from different text encoders ({pos.shape[-1]} vs {neg.shape[-1]} "
            "features): encode both with the same CLIP."
        )
    return pos, neg


def make_conditioning(positive, negative, encode: Callable[[torch.Tensor], torch.Tensor],
                      image: torch.Tensor | None, width: int, height: int, frames: int, fps: float,
                      dac: DACConfig) -> tuple[MovaConditioning, dict]:
    """Everything MOVA Conditioning outputs. ``encode`` is the Wan VAE: frames [F,H,W,3] -> raw latents."""
    check_video_size(height, width, frames)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    pos, neg = prompt_states(positive, negative)
    encoded = encode(condition_frames(image, width, height, frames))
    condition = build_condition(encoded, width, height, frames)
    cond = MovaConditioning(pos, neg, condition, width, height, frames, float(fps))
    return cond, empty_joint_latent(width, height, frames, fps, dac)
