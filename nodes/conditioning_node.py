"""MOVA Conditioning node: prompts + first frame (or white) -> MOVA condition and empty joint latent."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import torch
from comfy_api.latest import io, ui

from . import spec
from .comfy_io import schema, show_text
from .condition import make_conditioning
from .handles import LoadedPart

log = logging.getLogger(__name__)


class MovaConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.CONDITIONING, hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, positive, negative, vae, audio_vae: LoadedPart, width: int, height: int, length: int,
                fps: float, start_image=None) -> io.NodeOutput:
        channels = getattr(vae, "latent_channels", 16)
        if channels != 16:
            raise ValueError(
                f"vae makes {channels}-channel latents; MOVA needs the Wan 2.1 VAE (16 channels): load "
                "wan_2.1_vae.safetensors with Load VAE (the Wan 2.2 VAE does not fit)."
            )
        warnings: list[str] = []
        cond, latent = make_conditioning(
            positive, negative, lambda frames: vae.encode(frames[:, :, :, :3]), start_image,
            width, height, length, fps, audio_vae.model.config, warnings=warnings,
            available_bytes=mm.get_free_memory(torch.device("cpu")),
        )
        if not warnings:
            return io.NodeOutput(cond, latent, fps)
        report = "\n".join(f"warning: {w}" for w in warnings)
        for line in warnings:
            log.warning("MOVA Conditioning: %s", line)
        show_text(cls.hidden.unique_id, report)
        return io.NodeOutput(cond, latent, fps, ui=ui.PreviewText(report))
