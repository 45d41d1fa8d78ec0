"""Known frames in MOVA's image-to-video condition: any pixel frames, laid out the way ComfyUI's Wan nodes
(WanImageToVideo, WanFirstLastFrameToVideo) build them for Wan 2.2 I2V, whose experts MOVA's video experts
descend from.

The condition video holds the known frames at their places and mid-grey elsewhere. Its mask has one slot per
pixel frame, 4 per latent frame: latent frame 0 encodes pixel frame 0 alone (it fills all 4 slots), latent
frame t > 0 pixel frames 4t-3 .. 4t (one slot each). A slot is 1 where its pixel frame is known.
"""

from __future__ import annotations

import torch

from ...mova_model.sampling.sizes import VAE_TIME, check_video_size
from .condition import GREY, MASK_CHANNELS, WHITE


def fold_known_frames(known: torch.Tensor) -> torch.Tensor:
    """Known pixel frames [F] (bool, F = 4k+1) -> the condition's mask [1,4,T,1,1] (1 known, 0 generate)."""
    frames = known.shape[0]
    if (frames - 1) % VAE_TIME:
        raise ValueError(f"known frames must cover 4k+1 frames, got {frames}")
    slots = torch.cat([known[:1].repeat(MASK_CHANNELS - 1), known]).float()  # frame 0 fills 4 slots
    latent_frames = slots.shape[0] // MASK_CHANNELS
    return slots.view(1, latent_frames, MASK_CHANNELS).transpose(1, 2)[..., None, None].contiguous()


def keyframe_video(frames: int, width: int, height: int, start: torch.Tensor | None = None,
                   end: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel frames [frames,height,width,3] for the VAE, known [frames] bool).

    ``start`` [S,H,W,3] fills the first S frames (a white first frame when None, the official text-only
    recipe), ``end`` [E,H,W,3] the last E frames; both already at width x height. The rest is mid-grey.
    """
    check_video_size(height, width, frames)
    video = torch.full((frames, height, width, 3), GREY)
    known = torch.zeros(frames, dtype=torch.bool)
    if start is None:
        video[0] = WHITE
        known[0] = True
    else:
        video[:start.shape[0]] = start[:frames]
        known[:start.shape[0]] = True
    if end is not None:
        if end.shape[0] + (1 if start is None else start.shape[0]) > frames:
            raise ValueError(
                f"the start and end frames ({end.shape[0]} + {1 if start is None else start.shape[0]}) do not fit "
                f"in {frames} frames: make the clip longer"
            )
        video[frames - end.shape[0]:] = end
        known[frames - end.shape[0]:] = True
    return video, known


def known_latent_frames(known: torch.Tensor) -> torch.Tensor:
    """Latent frames [T] (bool) whose every pixel frame is known: those the latent noise mask can keep."""
    return fold_known_frames(known)[0].amin(dim=0).flatten() > 0
