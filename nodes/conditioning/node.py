"""The conditioning wing's ComfyUI nodes: MOVA Text Encode (a prompt through ComfyUI's UMT5-XXL CLIP, encoded as the
official pipeline does), MOVA Conditioning (prompts + first frame, or white, -> MOVA condition and empty joint
latent; optionally a last frame, a sound to follow, or a video to write the sound for), and MOVA Extend / MOVA Join
(longer videos as clips that continue each other, with continuous sound)."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import torch
from comfy_api.latest import io, ui

from ..av_latent import av_output
from ..comfy_io import schema, show_text
from ..handles import Extension, LoadedPart
from ..input_values import checked_inputs
from . import spec
from .audio_input import codec_encode
from .condition import make_conditioning
from .extend import join_clips, prepare_extension
from .modes import prepare_conditioning
from .text import encode_prompt

log = logging.getLogger(__name__)


def wan_vae_encoder(vae):
    """The Wan 2.1 VAE as frames [F,H,W,3] -> raw latents; a clear error for another VAE."""
    channels = getattr(vae, "latent_channels", 16)
    if channels != 16:
        raise ValueError(
            f"vae makes {channels}-channel latents; MOVA needs the Wan 2.1 VAE (16 channels): load "
            "wan_2.1_vae.safetensors with Load VAE (the Wan 2.2 VAE does not fit)."
        )
    return lambda frames: vae.encode(frames[:, :, :, :3])


def audio_vae_encoder(audio_vae: LoadedPart):
    """MOVA's DAC as waveform [1,1,T] -> latents [1,C,L], on the device ComfyUI loads it to."""
    def encode(waveform):
        mm.load_models_gpu([audio_vae.patcher])
        return codec_encode(audio_vae, waveform, device=audio_vae.patcher.load_device)
    return encode


class MovaConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.CONDITIONING, hidden=[io.Hidden.unique_id])

    @classmethod
    @checked_inputs(spec.CONDITIONING)
    def execute(cls, positive, negative, vae, audio_vae: LoadedPart, width: int, height: int, length: int,
                fps: float, start_image=None, end_image=None, audio=None, video=None,
                video_fps=None) -> io.NodeOutput:
        encode = wan_vae_encoder(vae)
        warnings: list[str] = []
        free = mm.get_free_memory(torch.device("cpu"))
        if end_image is None and audio is None and video is None:  # the official image-to-video path
            cond, latent = make_conditioning(positive, negative, encode, start_image, width, height, length, fps,
                                             audio_vae.model.config, warnings=warnings, available_bytes=free)
            outputs, report = (cond, latent, fps, None), []
        else:
            prepared = prepare_conditioning(
                positive, negative, encode, start_image, width, height, length, fps, audio_vae.model.config,
                end_image=end_image, audio=audio, video=video, video_fps=video_fps,
                encode_audio=audio_vae_encoder(audio_vae), warnings=warnings, available_bytes=free,
            )
            outputs, report = (prepared.conditioning, prepared.latent, fps, prepared.video), prepared.report
        outputs = (*outputs, av_output(outputs[1]))
        if not report and not warnings:
            return io.NodeOutput(*outputs)
        for line in warnings:
            log.warning("MOVA Conditioning: %s", line)
        if report:
            log.info("MOVA Conditioning: %s", "\n".join(report))
        text = "\n".join(report + [f"warning: {w}" for w in warnings])
        show_text(cls.hidden.unique_id, text)
        return io.NodeOutput(*outputs, ui=ui.PreviewText(text))


class MovaTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.TEXT_ENCODE, hidden=[io.Hidden.unique_id])

    @classmethod
    @checked_inputs(spec.TEXT_ENCODE)
    def execute(cls, text: str, clip) -> io.NodeOutput:
        conditioning, warnings = encode_prompt(clip, text)
        if not warnings:
            return io.NodeOutput(conditioning)
        report = "\n".join(f"warning: {w}" for w in warnings)
        for line in warnings:
            log.warning("MOVA Text Encode: %s", line)
        show_text(cls.hidden.unique_id, report)
        return io.NodeOutput(conditioning, ui=ui.PreviewText(report))


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
