"""A given video for MOVA (video-to-audio): frames checked against the clip's length and fps, fitted to its size."""

from __future__ import annotations

import math

import torch

from ...mova_model.sampling.sizes import VAE_TIME
from ..input_values import plain_number
from ..media_values import image_pixels
from .condition import fit_frame


def largest_clip(frames: int) -> int:
    """The most 4k+1 frames within ``frames``."""
    return (frames - 1) // VAE_TIME * VAE_TIME + 1


def take_video(video, frames: int, fps: float, video_fps: float | None) -> tuple[torch.Tensor, str]:
    """(the video's first ``frames`` frames [frames,H,W,3] float 0..1 at their own size, a report). The video must
    hold at least ``frames`` frames (the error names the length to use) and, when ``video_fps`` is given, run at
    ``fps``. 8- and 16-bit, grey and RGBA frames are converted (media_values.py)."""
    if not isinstance(video, torch.Tensor) or video.dim() != 4 or min(video.shape) < 1:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"video: expected IMAGE frames [N,H,W,3] (e.g. Get Video Components' images), got {shape}")
    if video_fps is not None:
        video_fps = float(plain_number(video_fps))
        if not math.isfinite(video_fps) or video_fps <= 0:
            raise ValueError(f"video_fps {video_fps:g} is not a frame rate: connect the video's fps (Get Video "
                             "Components' fps), or leave video_fps unconnected")
        if not math.isclose(video_fps, fps, rel_tol=1e-4):
            raise ValueError(
                f"video_fps {video_fps:g} (the video's frame rate) differs from fps {fps:g}: set fps to "
                f"{video_fps:g} (it sizes the audio and goes to Create Video), or connect the video's fps to it"
            )
    have = video.shape[0]
    if have < frames:
        raise ValueError(
            f"the video has {have} frames but length is {frames}: set length to {largest_clip(have)} "
            f"(the most 4k+1 frames the video holds)"
        )
    used = image_pixels(video[:frames].cpu(), "video")
    if have == frames:
        return used, f"video: {have} frames ({have / fps:.2f} s at {fps:g} fps), used whole"
    return used, (f"video: {have} frames ({have / fps:.2f} s at {fps:g} fps); using the first {frames} "
                  f"({frames / fps:.2f} s), the last {have - frames} are cut")


def fit_video(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Frames [N,H0,W0,C] -> [N,height,width,3], each centre-cropped and resized like the start image."""
    return torch.stack([fit_frame(frame[None], width, height, "video") for frame in frames])
