"""The sampling wing's ComfyUI nodes: MOVA Sampler (joint sampling with ComfyUI's memory manager, progress bar, previews
and Cancel), MOVA Sampler Options, and MOVA Audio Decode (audio latent -> ComfyUI AUDIO)."""

from __future__ import annotations

import logging

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import latent_preview
from comfy_api.latest import io, ui

from ...mova_model.networks.attention import resolve_attention_backend
from ...mova_model.sampling.sampler import sample
from ..comfy_io import schema, show_text
from ..handles import AudioLatent, LoadedPart, MovaConditioning, SamplerSettings
from ..input_values import checked_inputs
from . import spec
from .audio_decode import decode_to_audio
from .comfy_memory import expert_loader
from .run import activation_bytes, cache_report, make_settings, sample_joint, split_joint_latent, used_settings

log = logging.getLogger(__name__)


class MovaSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.SAMPLER, hidden=[io.Hidden.unique_id])

    @classmethod
    @checked_inputs(spec.SAMPLER)
    def execute(cls, high_noise_expert: LoadedPart, low_noise_expert: LoadedPart, audio_tower: LoadedPart,
                conditioning: MovaConditioning, latent: dict, seed: int, steps: int, cfg: float, shift: float,
                boundary_ratio: float, options: SamplerSettings | None = None) -> io.NodeOutput:
        device = mm.get_torch_device()
        video, audio = split_joint_latent(latent)
        experts = (high_noise_expert, low_noise_expert)
        memory = activation_bytes(video.shape, audio.samples.shape, high_noise_expert.model.config,
                                  audio_tower.model.audio_dit.config, high_noise_expert.compute_dtype)

        parallel = options.parallel if options is not None else None
        if parallel is None:
            before_expert, sampler, device_memory = (expert_loader(experts, audio_tower, memory, device, "MOVA Sampler"),
                                                     sample, mm.get_total_memory(device))
        else:  # MOVA Parallel: worker processes on its devices sample (nodes/parallel)
            from ..parallel.comfy_run import parallel_sample
            before_expert, sampler, device_memory = None, parallel_sample(parallel, *experts, audio_tower), None

        progress = comfy.utils.ProgressBar(steps)
        previewer = latent_preview.get_previewer(device, comfy.latent_formats.Wan21())

        def on_step(step: int, total: int, video_now, audio_now) -> None:
            preview = None
            if previewer is not None:  # the middle latent frame (frame 0 is the given image)
                middle = video_now.shape[2] // 2
                preview = previewer.decode_latent_to_preview_image("JPEG", video_now[:, :, middle:middle + 1])
            progress.update_absolute(step, total, preview)
            mm.throw_exception_if_processing_interrupted()

        release, report, warnings = used_settings(high_noise_expert, low_noise_expert, shift, boundary_ratio)
        log.info("MOVA Sampler: %s", report)
        for warning in warnings:
            log.warning("MOVA Sampler: %s", warning)
        lines = [report] + [f"warning: {w}" for w in warnings]
        show_text(cls.hidden.unique_id, "\n".join(lines))
        stats = {}
        video_latent, audio_latent = sample_joint(
            high_noise_expert, low_noise_expert, audio_tower, conditioning, latent, seed, steps, cfg, shift,
            boundary_ratio, device=device, before_expert=before_expert, on_step=on_step, settings=options,
            stats=stats, release=release, device_memory=device_memory, sampler=sampler,
        )
        log.info("MOVA Sampler: attention %s; %s", stats.get("attention"), "; ".join(stats.get("speed") or ["eager"]))
        if parallel is not None:
            lines.append(f"parallel: {stats['parallel']}")
        if options is not None and options.cache_threshold > 0:
            report = cache_report(stats)
            log.info("MOVA Sampler: %s (threshold %g)", report, options.cache_threshold)
            lines.append(report)
        text = "\n".join(lines)
        show_text(cls.hidden.unique_id, text)
        return io.NodeOutput(video_latent, audio_latent, ui=ui.PreviewText(text))


class MovaSamplerOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.SAMPLER_OPTIONS_NODE)

    @classmethod
    def validate_inputs(cls, attention: str = "auto") -> bool | str:
        """At queue time: an attention backend that is missing or cannot run on this device."""
        try:
            resolve_attention_backend(attention, mm.get_torch_device())
        except (ValueError, RuntimeError) as exc:
            return f"attention: {exc}"
        return True

    @classmethod
    @checked_inputs(spec.SAMPLER_OPTIONS_NODE)
    def execute(cls, bridge_cfg: float, audio_cfg: float, audio_shift: float, cfg_cutoff: float,
                cache_threshold: float, attention: str = "auto", compile: str = "off",
                fp8_compute: str = "auto", given_modality: str = "renoised") -> io.NodeOutput:
        return io.NodeOutput(make_settings(bridge_cfg, audio_cfg, audio_shift, cfg_cutoff, cache_threshold,
                                           attention, compile, fp8_compute, device=mm.get_torch_device(),
                                           given_modality=given_modality))


class MovaAudioDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.AUDIO_DECODE)

    @classmethod
    @checked_inputs(spec.AUDIO_DECODE)
    def execute(cls, audio_vae: LoadedPart, audio_latent: AudioLatent, chunk_size: int) -> io.NodeOutput:
        mm.load_models_gpu([audio_vae.patcher])
        audio = decode_to_audio(audio_vae, audio_latent, chunk_size, device=audio_vae.patcher.load_device)
        return io.NodeOutput(audio)
