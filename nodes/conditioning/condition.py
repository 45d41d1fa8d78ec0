"""MOVA Conditioning's logic: text states, the image-to-video condition and the empty joint latent."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ...mova_model.configs import DACConfig
from ...mova_model.memory.estimate import check_fits, condition_bytes
from ...mova_model.sampling.latents import normalise_video_latents
from ...mova_model.sampling.sizes import VAE_SPACE, VAE_TIME, VIDEO_LATENT_CHANNELS, check_video_size, latent_shapes
from ..handles import LATENT_AUDIO_KEY, AudioLatent, MovaConditioning
from ..media_values import check_channels, image_pixels
from .text import MAX_TOKENS

MASK_CHANNELS = 4
GREY = 0.5   # the frames after the first, in ComfyUI's 0..1 image range
WHITE = 1.0  # the first frame when no image is given (the official text-only recipe)


def text_states(conditioning, name: str, warnings: list[str] | None = None) -> torch.Tensor:
    """The text-encoder states [B,L,D] of a CONDITIONING from MOVA Text Encode (or CLIP Text Encode), at most
    512 rows: longer states are cut, with a warning appended to ``warnings``."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ValueError(f"{name}: expected a CONDITIONING from MOVA Text Encode, got {type(conditioning).__name__}")
    if len(conditioning) != 1:
        raise ValueError(
            f"{name} holds {len(conditioning)} conditionings (from Conditioning Combine or Concat): MOVA takes "
            "one prompt; write it in one MOVA Text Encode."
        )
    entry = conditioning[0]
    states = entry[0] if isinstance(entry, (list, tuple)) and entry else None
    if not isinstance(states, torch.Tensor) or states.dim() != 3:
        raise ValueError(f"{name}: expected text states [B,L,D] from MOVA Text Encode, got {type(states).__name__}")
    if states.shape[0] < 1 or states.shape[1] < 1:
        raise ValueError(f"{name} holds no text states (shape {tuple(states.shape)}): encode the prompt with MOVA Text "
                         "Encode (an empty prompt gives states too)")
    if not bool(torch.isfinite(states).all()):
        raise ValueError(f"{name}: the text states hold NaN or infinite values (the text encoder overflowed, e.g. "
                         "in fp16): encode the prompt again with umt5_xxl_fp16 or the fp8_e4m3fn_scaled file.")
    if states.shape[1] > MAX_TOKENS:
        message = (f"{name}: {states.shape[1]} text states, MOVA reads at most {MAX_TOKENS} (as the official "
                   f"pipeline): cut to the first {MAX_TOKENS}. MOVA Text Encode cuts the prompt before encoding, "
                   "exactly as the official pipeline does: use it, or shorten the prompt.")
        if warnings is not None:
            warnings.append(message)
        states = states[:, :MAX_TOKENS]
    return states.float().cpu()


def official_crop(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of the official first-frame crop: the target aspect ratio,
    centred, the crop size truncated to an integer (the same float expressions as the official code)."""
    if src_h / src_w < height / width:      # wider than the target: crop the sides
        crop_w = int(src_h / height * width)
        return (src_w - crop_w) // 2, 0, crop_w, src_h
    crop_h = int(src_w / width * height)    # taller (or the same ratio): crop top and bottom
    return 0, (src_h - crop_h) // 2, src_w, crop_h


def fit_frame(image: torch.Tensor, width: int, height: int, name: str = "start_image") -> torch.Tensor:
    """IMAGE [B,H0,W0,C] or [H0,W0,C] (float 0..1, 8- or 16-bit, grey or RGBA: media_values.py) -> its first image
    [height,width,3] float 0..1, fitted as the official pipeline does: 8-bit pixels, centre crop to the target
    aspect ratio (integer crop size), then PIL's bicubic resize. A picture that is already width x height (after
    the crop) is used as is. ``name`` is the input, for the errors."""
    from PIL import Image

    if isinstance(image, torch.Tensor) and image.dim() in (3, 4):
        check_channels(image, name)
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        if image.shape[0] < 1:
            raise ValueError(f"{name} holds no image (a batch of 0, shape {tuple(image.shape)}): connect Load Image"
                             + (" (or leave start_image empty for a white first frame)" if name == "start_image" else ""))
        image = image[0]
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or min(image.shape) < 1:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(
            f"{name} must be an IMAGE [B,H,W,3] with at least one pixel, got shape {shape}: connect Load Image"
            + (" (or leave start_image empty for a white first frame)" if name == "start_image" else "")
        )
    image = image_pixels(image.cpu(), name)
    src_h, src_w = image.shape[0], image.shape[1]
    left, top, crop_w, crop_h = official_crop(src_w, src_h, width, height)
    if crop_w < 1 or crop_h < 1:
        raise ValueError(
            f"{name} is {src_w}x{src_h}: too small to crop to the {width}x{height} aspect ratio; "
            "use a larger picture"
        )
    rgb = image[top:top + crop_h, left:left + crop_w]
    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).contiguous().numpy()
    fitted = Image.fromarray(pixels).resize((width, height), resample=Image.Resampling.BICUBIC)
    return torch.frombuffer(bytearray(fitted.tobytes()), dtype=torch.uint8).view(height, width, 3).float() / 255


def batch_note(image, name: str, used: str) -> str | None:
    """A line for the node when an IMAGE input holds several images of which one is used."""
    if isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[0] > 1:
        return f"{name} holds {image.shape[0]} images: the {used} one is used"
    return None


def condition_frames(image: torch.Tensor | None, width: int, height: int, frames: int) -> torch.Tensor:
    """The frames the VAE encodes for the condition [frames,height,width,3]: the start image (white when
    None), then mid-grey frames."""
    check_video_size(height, width, frames)
    video = torch.full((frames, height, width, 3), GREY)
    video[0] = WHITE if image is None else fit_frame(image, width, height)
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


def check_sizes(width: int, height: int, frames: int, fps: float, available_bytes: int | None = None) -> None:
    """Sizes MOVA takes, a finite positive fps, and (given the free host memory) room for the condition frames."""
    check_video_size(height, width, frames)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}")
    if available_bytes is not None:
        check_fits(condition_bytes, width, height, frames, available_bytes, "host memory (RAM) for the condition "
                   "frames", "Lower width, height or length on MOVA Conditioning, or free memory.")


def prompt_states(positive, negative, warnings: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive and negative text states [B,L,D], from the same text encoder (states over 512 tokens are
    cut, with a line in ``warnings``)."""
    pos, neg = text_states(positive, "positive", warnings), text_states(negative, "negative", warnings)
    if pos.shape[-1] != neg.shape[-1]:
        raise ValueError(
            f"positive and negative come from different text encoders ({pos.shape[-1]} vs {neg.shape[-1]} "
            "features): encode both with the same CLIP."
        )
    return pos, neg


def make_conditioning(positive, negative, encode: Callable[[torch.Tensor], torch.Tensor],
                      image: torch.Tensor | None, width: int, height: int, frames: int, fps: float,
                      dac: DACConfig, warnings: list[str] | None = None,
                      available_bytes: int | None = None) -> tuple[MovaConditioning, dict]:
    """Everything MOVA Conditioning outputs. ``encode`` is the Wan VAE: frames [F,H,W,3] -> raw latents.
    ``warnings`` receives what the node shows (text states cut to 512); ``available_bytes``: free host memory,
    checked against what the condition frames need before they are built."""
    check_sizes(width, height, frames, fps, available_bytes)
    pos, neg = prompt_states(positive, negative, warnings)
    note = batch_note(image, "start_image", "first")
    if note is not None and warnings is not None:
        warnings.append(note)
    encoded = encode(condition_frames(image, width, height, frames))
    condition = build_condition(encoded, width, height, frames)
    cond = MovaConditioning(pos, neg, condition, width, height, frames, float(fps))
    return cond, empty_joint_latent(width, height, frames, fps, dac)
