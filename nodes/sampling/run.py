"""MOVA Sampler's logic: wiring checks, the seeded joint sampling run, and the memory it needs."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ...mova_model.configs import DiTConfig, SchedulerConfig
from ...mova_model.memory.estimate import check_fits, forward_bytes, sampling_bytes
from ...mova_model.memory.speed import check_speed_options
from ...mova_model.networks.attention import resolve_attention_backend
from ...mova_model.sampling.known_regions import KnownLatents, blend
from ...mova_model.sampling.latents import denormalise_video_latents, normalise_video_latents
from ...mova_model.sampling.sampler import MovaTowers, SamplingOptions, make_noise, sample
from ...mova_model.weights.release import ReleaseSettings, read_release_settings, release_root
from ..av_latent import is_av_latent, split_av_latent
from ..handles import (
    HIGH_NOISE,
    LATENT_AUDIO_KEY,
    LOW_NOISE,
    NOISE_MASK_KEY,
    AudioLatent,
    LoadedPart,
    MovaConditioning,
    SamplerSettings,
)

ROLE_NAMES = {HIGH_NOISE: "the high-noise expert (video_dit)", LOW_NOISE: "the low-noise expert (video_dit_2)"}
# What the sampler does with a given modality (a given sound or video): renoised with the rest, or kept clean.
GIVEN_MODALITIES = ("renoised", "clean")


def split_joint_latent(latent) -> tuple[torch.Tensor, AudioLatent]:
    """(video latents [B,16,T,h,w], AudioLatent) of MOVA's joint LATENT (MOVA's form or core's audio-video form);
    a clear error for any other latent."""
    video, audio, _ = joint_latent(latent)
    return video, audio


def joint_latent(latent) -> tuple[torch.Tensor, AudioLatent, torch.Tensor | None]:
    """(video latents [B,16,T,h,w], AudioLatent, the video's noise mask or None) of MOVA's joint LATENT, in MOVA's
    form (video in samples, the AudioLatent beside it) or core's audio-video form (av_latent.py)."""
    if is_av_latent(latent):
        return split_av_latent(latent)
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError("latent: expected a LATENT; connect the latent output of MOVA Conditioning")
    audio = latent.get(LATENT_AUDIO_KEY)
    if not isinstance(audio, AudioLatent):
        raise ValueError(
            f"latent has no audio part (shape {tuple(latent['samples'].shape)}): it comes from another node, not "
            "MOVA Conditioning. Connect MOVA Conditioning's latent output to the MOVA Sampler."
        )
    return latent["samples"], audio, latent.get(NOISE_MASK_KEY)


def check_roles(high: LoadedPart, low: LoadedPart) -> None:
    """The experts' files say which is which: refuse swapped connections with the fix."""
    for slot, part, wrong in (("high_noise_expert", high, LOW_NOISE), ("low_noise_expert", low, HIGH_NOISE)):
        if part.role == wrong:
            raise ValueError(
                f"{slot} got {ROLE_NAMES[wrong]} ({part.source}): swap the two expert loaders' connections."
            )


def matching_towers(high: LoadedPart, low: LoadedPart, tower: LoadedPart, cond: MovaConditioning) -> MovaTowers:
    """The towers of the three loaders, or a ValueError when the experts are swapped or the prompt comes from
    another text encoder than MOVA's."""
    check_roles(high, low)
    text_dim = high.model.config.text_dim
    if cond.context_pos.shape[-1] != text_dim:
        raise ValueError(
            f"the prompt has {cond.context_pos.shape[-1]} features per token, MOVA needs {text_dim} (UMT5-XXL): "
            "load umt5_xxl_fp8_e4m3fn_scaled.safetensors (or umt5_xxl_fp16) with CLIP Loader, type wan."
        )
    return MovaTowers([high.model, low.model], tower.model.audio_dit, tower.model.bridge)


def check_setup(high: LoadedPart, low: LoadedPart, tower: LoadedPart, cond: MovaConditioning,
                video: torch.Tensor, audio: AudioLatent) -> MovaTowers:
    """Raise a ValueError saying what to change when the parts do not belong together; else the towers."""
    towers = matching_towers(high, low, tower, cond)
    audio_dit, bridge = towers.audio_dit, towers.bridge
    if tuple(cond.condition.shape[2:]) != tuple(video.shape[2:]):
        raise ValueError(
            f"the conditioning is for latents {tuple(cond.condition.shape[2:])} but the latent is "
            f"{tuple(video.shape[2:])}: connect the conditioning and latent of the same MOVA Conditioning node."
        )
    if (audio.frames, audio.fps) != (cond.frames, cond.fps):
        raise ValueError(
            f"the latent is for {audio.frames} frames at {audio.fps:g} fps but the conditioning for {cond.frames} at "
            f"{cond.fps:g}: connect the conditioning and latent of the same MOVA Conditioning node."
        )
    if audio.samples.shape[1] != audio_dit.config.in_dim:
        raise ValueError(
            f"the audio VAE makes {audio.samples.shape[1]}-channel latents but the audio DiT takes "
            f"{audio_dit.config.in_dim}: load the audio VAE and the audio tower from the same MOVA release."
        )
    codec_rate = audio.sample_rate / audio.hop_length
    if not math.isclose(codec_rate, bridge.config.audio_fps, rel_tol=1e-6):
        raise ValueError(
            f"the audio VAE runs at {codec_rate:g} latents/s ({audio.sample_rate} Hz / hop {audio.hop_length}) but "
            f"the audio tower was trained at {bridge.config.audio_fps:g}: load the audio VAE of the same MOVA release."
        )
    return towers


def activation_bytes(video_shape, audio_shape, video: DiTConfig, audio: DiTConfig, dtype: torch.dtype) -> int:
    """Rough peak activation memory of one joint forward: the FFN hidden and a few copies of the tokens."""
    return forward_bytes(video_shape, audio_shape, video, audio, torch.empty((), dtype=dtype).element_size())


def check_sampling_memory(high: LoadedPart, tower: LoadedPart, cond: MovaConditioning, video: torch.Tensor,
                          audio: AudioLatent, device_memory: int) -> None:
    """Refuse, before any noise or weight is touched, a size whose activations and latents cannot fit the
    device's ``device_memory`` bytes (the weights can be offloaded, these cannot), naming the largest that fits."""
    size = torch.empty((), dtype=high.compute_dtype).element_size()
    configs = high.model.config, tower.model.audio_dit.config
    batch = video.shape[0]

    def need(width: int, height: int, frames: int) -> int:
        return batch * sampling_bytes(width, height, frames, cond.fps, audio.sample_rate, audio.hop_length,
                                      audio.samples.shape[1], *configs, size)

    check_fits(need, cond.width, cond.height, cond.frames, device_memory, "device memory for the sampler's "
               "activations and latents", "Lower width, height or length on MOVA Conditioning (the model weights "
               "are offloaded as needed, the activations are not).")


def experts_fit_together(expert_bytes: tuple[int, int], tower_bytes: int, activations: int, budget: float) -> bool:
    """Whether both video experts, the audio tower and one forward's activations fit in ``budget`` bytes of the
    sampling device at once: then both experts stay loaded (no reload per expert or per queue); else the sampler
    keeps one expert at a time."""
    return sum(expert_bytes) + tower_bytes + activations <= budget


def make_settings(bridge_cfg: float, audio_cfg: float, audio_shift: float, cfg_cutoff: float,
                  cache_threshold: float, attention: str = "auto", compile: str = "off",
                  fp8_compute: str = "auto", device=None, given_modality: str = "renoised") -> SamplerSettings:
    """MOVA Sampler Options' widgets as settings: audio_cfg / audio_shift 0 mean the sampler's cfg / shift.
    An attention backend that cannot run on ``device`` (the sampling device) is refused here."""
    if given_modality not in GIVEN_MODALITIES:
        raise ValueError(f"given_modality {given_modality!r} is not one of {', '.join(GIVEN_MODALITIES)}")
    settings = SamplerSettings(bridge_cfg=bridge_cfg, audio_cfg=audio_cfg or None, audio_shift=audio_shift or None,
                               cfg_cutoff=cfg_cutoff, cache_threshold=cache_threshold, attention=attention,
                               compile=compile, fp8_compute=fp8_compute, clean_given=given_modality == "clean")
    resolve_attention_backend(attention, device)
    sampling_options(1, 5.0, 5.0, 0.9, 24.0, settings)  # the same checks the sampler makes, here at the source
    return settings


def sampling_options(steps: int, cfg: float, shift: float, boundary_ratio: float, fps: float,
                     settings: SamplerSettings | None = None, scheduler: SchedulerConfig | None = None
                     ) -> SamplingOptions:
    """The core sampler's options from the MOVA Sampler's widgets and MOVA Sampler Options (None: official)."""
    if settings is not None and not isinstance(settings, SamplerSettings):
        raise ValueError("options: expected the output of MOVA Sampler Options")
    s = settings or SamplerSettings()
    check_speed_options(s.compile, s.fp8_compute)
    return SamplingOptions(steps=steps, cfg_scale=cfg, shift=shift, boundary_ratio=boundary_ratio, fps=fps,
                           audio_cfg_scale=s.audio_cfg, audio_shift=s.audio_shift, bridge_cfg_scale=s.bridge_cfg,
                           cfg_cutoff=s.cfg_cutoff, cache_threshold=s.cache_threshold, attention=s.attention,
                           compile=s.compile, fp8_compute=s.fp8_compute, scheduler=scheduler or SchedulerConfig(),
                           clean_given=s.clean_given)


def release_settings(high: LoadedPart, low: LoadedPart) -> tuple[ReleaseSettings, list[str]]:
    """The settings of the release folder the experts were loaded from (MOVA's defaults for single files),
    and warnings when the two experts come from releases whose settings differ."""
    roots = [release_root(part.source) for part in (high, low)]
    found = [read_release_settings(root) for root in roots if root is not None]
    if not found:
        return ReleaseSettings(), []
    warnings = []
    if len(found) == 2 and (found[0].scheduler, found[0].boundary_ratio) != (found[1].scheduler, found[1].boundary_ratio):
        warnings.append(f"the experts come from two releases with other settings ({found[0].root}, {found[1].root}): "
                        f"using those of {found[0].root}")
    return found[0], warnings


def settings_report(release: ReleaseSettings, shift: float, boundary_ratio: float) -> tuple[str, list[str]]:
    """(what the sampler uses, one line; warnings where the widgets differ from the release's values)."""
    s = release.scheduler
    where = f"release {release.root}" if release.found else "MOVA's defaults (no release folder)"
    line = (f"shift {shift:g}, boundary_ratio {boundary_ratio:g} (widgets); sigma_min {s.sigma_min:g}, "
            f"extra_one_step {str(s.extra_one_step).lower()} ({where})")
    if not release.found:
        return line, []
    warnings = []
    for name, used, theirs, source in (("shift", shift, s.shift, "scheduler/scheduler_config.json"),
                                       ("boundary_ratio", boundary_ratio, release.boundary_ratio, "model_index.json")):
        if not math.isclose(used, theirs, rel_tol=1e-9, abs_tol=1e-12):
            warnings.append(f"{name} {used:g} differs from the release's {theirs:g} ({source}): using {used:g}, "
                            "the widget's value")
    return line, warnings


def used_settings(high: LoadedPart, low: LoadedPart, shift: float, boundary_ratio: float
                  ) -> tuple[ReleaseSettings, str, list[str]]:
    """(the release's settings, the line saying what the sampler uses, warnings) for the experts and widgets."""
    release, warnings = release_settings(high, low)
    report, differ = settings_report(release, shift, boundary_ratio)
    return release, report, warnings + differ


def needs_negative(options: SamplingOptions) -> bool:
    """Whether any text CFG is on (for video or audio): then the negative prompt is used."""
    audio = options.cfg_scale if options.audio_cfg_scale is None else options.audio_cfg_scale
    return options.cfg_scale != 1.0 or audio != 1.0


def cache_report(stats: dict) -> str:
    """One line on step caching: how many steps reused the previous result."""
    computed, skipped = stats.get("computed_steps", 0), stats.get("skipped_steps", 0)
    total = computed + skipped
    share = skipped / total if total else 0.0
    return f"step caching skipped {skipped} of {total} steps ({share:.0%})"


def sample_joint(high: LoadedPart, low: LoadedPart, tower: LoadedPart, cond: MovaConditioning, latent: dict,
                 seed: int, steps: int, cfg: float, shift: float, boundary_ratio: float,
                 device: torch.device | str | None = None,
                 before_expert: Callable[[int], None] | None = None,
                 on_step: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
                 settings: SamplerSettings | None = None, stats: dict | None = None,
                 release: ReleaseSettings | None = None, device_memory: int | None = None, sampler=sample
                 ) -> tuple[dict, AudioLatent]:
    """Denoise MOVA's joint latent (either form) from seeded noise. Returns the video as a ComfyUI LATENT (raw Wan 2.1
    latents, float32, CPU) and the audio latents. ``before_expert(i)`` runs before expert i (0 high,
    1 low) is first used; ``on_step(step, total, video, audio)`` after every step (raise to cancel).
    ``settings`` come from MOVA Sampler Options; ``release``: the experts' release settings (read from their
    folder when None); ``device_memory``: bytes of the sampling device, checked against what the run needs;
    ``stats`` receives computed_steps / skipped_steps and ``scheduler`` (the one used); ``sampler``: what runs
    the sampling, with ``mova_model.sampler.sample``'s signature (MOVA Parallel's workers, nodes/parallel)."""
    video, audio, video_mask = joint_latent(latent)
    towers = check_setup(high, low, tower, cond, video, audio)
    if device_memory is not None:
        check_sampling_memory(high, tower, cond, video, audio, device_memory)
    if release is None:
        release, _ = release_settings(high, low)
    options = sampling_options(steps, cfg, shift, boundary_ratio, cond.fps, settings, scheduler=release.scheduler)
    if stats is not None:
        stats.update(scheduler=options.scheduler)
    video_noise, audio_noise = make_noise(video.shape, audio.samples.shape, seed)
    negative = cond.context_neg if needs_negative(options) else None
    known_video = None if video_mask is None else KnownLatents(normalise_video_latents(video), video_mask.float())
    known_audio = None if audio.noise_mask is None else KnownLatents(audio.samples.float(), audio.noise_mask.float())
    out_video, out_audio = sampler(
        towers, cond.condition, cond.context_pos, negative, video_noise, audio_noise, options,
        callback=on_step, before_expert=before_expert, dtype=high.compute_dtype, device=device, stats=stats,
        known_video=known_video, known_audio=known_audio,
    )
    raw = denormalise_video_latents(out_video).cpu()
    if video_mask is not None:  # the given raw latents exactly, not a normalisation round trip
        raw = blend(raw, video.float().cpu(), video_mask.float().cpu())
    video_latent = {"samples": raw}
    audio_latent = AudioLatent(out_audio.float().cpu(), audio.frames, audio.fps, audio.sample_rate, audio.hop_length,
                               noise_mask=audio.noise_mask, given_waveform=audio.given_waveform)
    return video_latent, audio_latent
