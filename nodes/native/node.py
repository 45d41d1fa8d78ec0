"""The native sampling path's nodes: MOVA Guider and MOVA Scheduler (for ComfyUI's SamplerCustomAdvanced with stock
noise and samplers) and MOVA Separate AV Latent (the joint latent -> the two decoders)."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from ..av_latent import NATIVE_NEEDS, has_nested_latents, require_nested_latents
from ..comfy_io import schema, show_text
from ..handles import LoadedPart, MovaConditioning, SamplerSettings
from ..input_values import checked_inputs
from ..sampling.run import check_roles, joint_latent, sampling_options, used_settings
from . import spec
from .checks import check_scheduler_sigmas
from .comfy_guider import GuiderParts, JointGuider, guider_sigmas

log = logging.getLogger(__name__)


class MovaGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.GUIDER, hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, cfg: float) -> bool | str:
        """At queue time: a ComfyUI without nested (audio-video) latents cannot run the native path."""
        return True if has_nested_latents() else NATIVE_NEEDS

    @classmethod
    @checked_inputs(spec.GUIDER)
    def execute(cls, high_noise_expert: LoadedPart, low_noise_expert: LoadedPart, audio_tower: LoadedPart,
                conditioning: MovaConditioning, cfg: float, shift: float, boundary_ratio: float,
                options: SamplerSettings | None = None) -> io.NodeOutput:
        require_nested_latents()
        check_roles(high_noise_expert, low_noise_expert)
        release, report, warnings = used_settings(high_noise_expert, low_noise_expert, shift, boundary_ratio)
        sampling_options(1, cfg, shift, boundary_ratio, conditioning.fps, options, scheduler=release.scheduler)
        log.info("MOVA Guider: %s", report)
        for warning in warnings:
            log.warning("MOVA Guider: %s", warning)
        text = "\n".join([report] + [f"warning: {w}" for w in warnings])
        show_text(cls.hidden.unique_id, text)
        guider = JointGuider(GuiderParts(high_noise_expert, low_noise_expert, audio_tower, conditioning, cfg, shift,
                                         boundary_ratio, options, release, node_id=cls.hidden.unique_id))
        return io.NodeOutput(guider, ui=ui.PreviewText(text))


class MovaScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.SCHEDULER)

    @classmethod
    @checked_inputs(spec.SCHEDULER)
    def execute(cls, guider: JointGuider, steps: int, scheduler: str) -> io.NodeOutput:
        return io.NodeOutput(check_scheduler_sigmas(guider_sigmas(guider, steps, scheduler), scheduler, steps))


class MovaSeparateAVLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.SEPARATE_AV)

    @classmethod
    @checked_inputs(spec.SEPARATE_AV)
    def execute(cls, av_latent: dict) -> io.NodeOutput:
        video, audio, _ = joint_latent(av_latent)
        return io.NodeOutput({"samples": video.float()}, audio)
