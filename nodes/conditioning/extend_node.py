"""MOVA Extend and MOVA Join nodes: longer videos as clips that continue each other, with continuous sound."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from .. import spec
from ..av_latent import av_output
from ..comfy_io import schema, show_text
from .node import audio_vae_encoder, wan_vae_encoder
from .extend import join_clips, prepare_extension
from ..handles import Extension, LoadedPart
from ..input_values import checked_inputs

log = logging.getLogger(__name__)


class MovaExtend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.EXTEND, hidden=[io.Hidden.unique_id])

    @classmethod
    @checked_inputs(spec.EXTEND)
    def execute(cls, positive, negative, vae, audio_vae: LoadedPart, images, audio, length: int, overlap: int,
                fps: float, crossfade: float) -> io.NodeOutput:
        cond, latent, extension, report = prepare_extension(
            positive, negative, wan_vae_encoder(vae), audio_vae_encoder(audio_vae), audio_vae.model.config, images,
            audio, length, overlap, fps, crossfade,
        )
        log.info("MOVA Extend: %s", report)
        show_text(cls.hidden.unique_id, report)
        return io.NodeOutput(cond, latent, extension, av_output(latent), ui=ui.PreviewText(report))


class MovaJoin(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.JOIN)

    @classmethod
    @checked_inputs(spec.JOIN)
    def execute(cls, extension: Extension, images, audio) -> io.NodeOutput:
        joined, sound = join_clips(extension, images, audio)
        return io.NodeOutput(joined, sound, extension.fps)
