"""MOVA's GUIDER for ComfyUI's SamplerCustomAdvanced: the stock NOISE, SAMPLER and SIGMAS drive MOVA.

SamplerCustomAdvanced calls ``guider.sample(noise, latent, sampler, sigmas, denoise_mask, callback, ...)`` with the
joint latent in core's audio-video form (nested video and audio, nested noise masks). The guider normalises the
video, packs both parts into one tensor as core does for nested latents, and hands the stock sampler itself as
the model: each call unpacks the latents, runs ``mova_model.denoiser.JointDenoiser`` (experts, audio tower and
bridge, guidance, kept regions) and packs the prediction. Experts load through ComfyUI's memory manager as in the
MOVA Sampler. The samplers read ComfyUI's flow-matching model sampling (CONST, MOVA's shift) from it, and the
preview shows the video's middle frame.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers
import comfy.utils
import torch

from ...mova_model.networks.attention import use_attention_backend
from ...mova_model.sampling.denoiser import JointDenoiser, prepare_speed
from ...mova_model.sampling.known_regions import KnownLatents, blend
from ...mova_model.sampling.latents import denormalise_video_latents, normalise_video_latents
from ...mova_model.sampling.scheduler import make_schedule
from ...mova_model.weights.release import ReleaseSettings
from ..av_latent import is_nested, require_nested_latents
from ..comfy_io import show_text
from ..handles import LoadedPart, MovaConditioning, SamplerSettings
from ..sampling.comfy_memory import expert_loader
from ..sampling.run import activation_bytes, cache_report, sampling_options
from .checks import check_native_memory, check_native_setup, check_native_sigmas
from .spec import OFFICIAL_SCHEDULE

log = logging.getLogger(__name__)


class ModelSamplingMova(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """ComfyUI's flow matching (x = σ·noise + (1−σ)·x0, timestep = σ·1000) with MOVA's shift."""


def mova_model_sampling(shift: float, timesteps: int) -> ModelSamplingMova:
    sampling = ModelSamplingMova()
    sampling.set_parameters(shift=shift, timesteps=timesteps, multiplier=timesteps)
    return sampling


class PackedVideoPreview(comfy.latent_formats.Wan21):
    """Wan 2.1's preview colours on the video's middle latent frame of the packed joint latent [B,1,N]."""

    def __init__(self, video_shape):
        super().__init__()
        self.taesd_decoder_name = None  # a TAE decoder would be handed the packed latent: colours only
        self.video_shape = tuple(video_shape)
        self.latent_rgb_factors_reshape = self.middle_frame

    def middle_frame(self, latent: torch.Tensor) -> torch.Tensor:
        """The video's middle latent frame [B,16,1,h,w] of the packed joint latent [B,1,N], or of the video part
        [B,16,T,h,w] that newer ComfyUI's preview takes from a nested latent."""
        if latent.dim() == 5:
            video = latent
        else:
            size = math.prod(self.video_shape[1:])
            video = latent[:, :, :size].reshape(latent.shape[0], *self.video_shape[1:])
        middle = video.shape[2] // 2  # frame 0 is the given image
        return video[:, :, middle:middle + 1]


class MovaNativeModel:
    """What ComfyUI's samplers read from a guider's model (``guider.inner_model``, ``model_patcher.model``)."""

    def __init__(self, shift: float, timesteps: int, video_shape):
        self.model_sampling = mova_model_sampling(shift, timesteps)
        self.latent_format = PackedVideoPreview(video_shape)
        self.latent_shapes = None  # of the last run: for SamplerCustomAdvanced's denoised output

    def process_latent_in(self, latent):
        return latent

    def process_latent_out(self, latent: torch.Tensor) -> torch.Tensor:
        """A prediction in MOVA's space -> the video as raw Wan 2.1 latents (denoised output). SamplerCustomAdvanced
        hands it packed [B,1,N] (ComfyUI v0.8) or, newer, as the nested (video, audio) pair; it comes back in the
        same form."""
        if is_nested(latent):
            video, audio = latent.unbind()
            return require_nested_latents()([denormalise_video_latents(video).to(video), audio])
        video, audio = comfy.utils.unpack_latents(latent, self.latent_shapes)
        return comfy.utils.pack_latents([denormalise_video_latents(video).to(latent), audio])[0]

    def scale_latent_inpaint(self, sigma, noise, latent_image, **kwargs):
        sigma = sigma.reshape([sigma.shape[0]] + [1] * (noise.ndim - 1))
        return self.model_sampling.noise_scaling(sigma, noise, latent_image)


class GuiderPatcher:
    """The model patcher stand-in SamplerCustomAdvanced, latent_preview and the samplers read from a guider (the
    real patchers are the experts' and the audio tower's, loaded per expert)."""

    def __init__(self, model: MovaNativeModel):
        self.model = model
        self.model_options = {"transformer_options": {}}

    @property
    def load_device(self):
        return mm.get_torch_device()

    @property
    def offload_device(self):
        return mm.unet_offload_device()

    def get_model_object(self, name: str):
        return getattr(self.model, name)


@dataclass(frozen=True)
class GuiderParts:
    """What MOVA Guider holds: the networks, the conditioning and the sampler settings."""

    high: LoadedPart
    low: LoadedPart
    tower: LoadedPart
    conditioning: MovaConditioning
    cfg: float
    shift: float
    boundary_ratio: float
    settings: SamplerSettings | None
    release: ReleaseSettings
    node_id: str | None = None


def _two_parts(x, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not is_nested(x):
        raise ValueError(
            f"{name}: SamplerCustomAdvanced got a latent of video only {tuple(x.shape)}: connect MOVA Conditioning's "
            "av_latent output (video and audio together) to its latent_image, not the latent for the MOVA Sampler."
        )
    parts = x.unbind()
    if len(parts) != 2:
        raise ValueError(f"{name}: the audio-video latent has {len(parts)} parts, MOVA's has 2 (video, audio)")
    return parts[0], parts[1]


def _mask_for(mask, shape, device) -> torch.Tensor | None:
    """A noise mask that broadcasts to ``shape`` as it is (MOVA's per-frame / per-step masks), else resized to it the
    way ComfyUI's samplers resize masks; None when it keeps nothing."""
    if mask is None:
        return None
    mask = mask.float()
    fits = mask.dim() == len(shape) and all(m in (1, s) for m, s in zip(mask.shape, shape))
    if not fits:
        mask = comfy.utils.reshape_mask(mask, shape)
    return None if bool((mask == 1).all()) else mask.to(device)


class JointGuider:
    """MOVA Guider's GUIDER: ``sample`` is what SamplerCustomAdvanced calls; the stock sampler calls the guider itself as its
    model (``__call__``), as it calls ComfyUI's CFGGuider.

    Like CFGGuider it has ``cfg`` (``set_cfg``), which the samplers read and which a PREDICT_NOISE wrapper in
    ``model_options`` (ComfyUI's per-step CFG overrides) may change for one call: each call guides with the
    ``cfg`` it finds (MOVA's text CFG: the video's, and the audio's unless MOVA Sampler Options sets audio_cfg)."""

    def __init__(self, parts: GuiderParts):
        self.parts = parts
        self.cfg = parts.cfg
        cond = parts.conditioning.condition  # [B,20,T,h,w]: 4 mask channels, then the 16 latent channels
        video_shape = (cond.shape[0], cond.shape[1] - 4, *cond.shape[2:])
        self.inner_model = MovaNativeModel(parts.shift, parts.release.scheduler.num_train_timesteps, video_shape)
        self.model_patcher = GuiderPatcher(self.inner_model)
        self.model_options = self.model_patcher.model_options
        self._run = None

    def set_cfg(self, cfg: float) -> None:
        self.cfg = cfg

    @property
    def shift(self) -> float:
        return self.parts.shift

    @property
    def scheduler_config(self):
        return self.parts.release.scheduler

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        """The joint latent (NestedTensor: raw video, audio) sampled from ``noise`` along ``sigmas``."""
        nested = require_nested_latents()
        check_native_sigmas(sigmas)
        if sigmas.shape[-1] <= 1:
            return latent_image
        p = self.parts
        video_raw, audio = _two_parts(latent_image, "latent_image")
        noise_video, noise_audio = _two_parts(noise, "noise")
        towers = check_native_setup(p.high, p.low, p.tower, p.conditioning, video_raw.shape, audio.shape)
        device = mm.get_torch_device()
        parallel = p.settings.parallel if p.settings is not None else None
        if parallel is None:  # MOVA Parallel's workers check their own devices
            check_native_memory(p.high, p.tower, p.conditioning, video_raw.shape[0], audio.shape[1],
                                mm.get_total_memory(device))
        options = sampling_options(1, p.cfg, p.shift, p.boundary_ratio, p.conditioning.fps, p.settings,
                                   scheduler=p.release.scheduler)
        video_raw, audio = video_raw.float().cpu(), audio.float().cpu()
        video = normalise_video_latents(video_raw) if bool(video_raw.any()) else torch.zeros_like(video_raw)
        masks = list(denoise_mask.unbind()) if is_nested(denoise_mask) else [denoise_mask]
        video_mask = _mask_for(masks[0], video.shape, "cpu")
        audio_mask = _mask_for(masks[1] if len(masks) > 1 else None, audio.shape, "cpu")
        experts = (p.high, p.low)
        memory = activation_bytes(video.shape, audio.shape, p.high.model.config, p.tower.model.audio_dit.config,
                                  p.high.compute_dtype)
        before_expert = None if parallel is not None else expert_loader(experts, p.tower, memory, device, "MOVA Guider")
        # the negative prompt whenever given: a per-step override may turn CFG on (a pass runs only while it is)
        negative = p.conditioning.context_neg
        if parallel is None:
            make_denoiser = JointDenoiser
        else:  # MOVA Parallel: the denoiser runs on its worker processes (nodes/parallel)
            from ..parallel.comfy_run import parallel_denoiser
            make_denoiser = parallel_denoiser(parallel, p.high, p.low, p.tower)
        denoiser = make_denoiser(
            towers, p.conditioning.condition, p.conditioning.context_pos, negative, noise_video.float(),
            noise_audio.float(), options, sigmas.tolist(), dtype=p.high.compute_dtype, device=device,
            known_video=None if video_mask is None else KnownLatents(video, video_mask),
            known_audio=None if audio_mask is None else KnownLatents(audio, audio_mask),
            before_expert=before_expert)
        attention, speed = ((denoiser.attention, denoiser.speed) if parallel is not None
                            else prepare_speed(towers, denoiser.options, device))
        log.info("MOVA Guider: %d steps, %s; attention %s; %s", denoiser.steps,
                 "the official timesteps (MOVA's schedule)" if denoiser.official else "timesteps 1000·sigma",
                 attention, "; ".join(speed or ["eager"]))
        packed_latent, shapes = comfy.utils.pack_latents([video, audio])
        packed_noise, _ = comfy.utils.pack_latents([noise_video.float().cpu(), noise_audio.float().cpu()])
        self.inner_model.latent_shapes = shapes
        self.inner_model.latent_format.video_shape = tuple(video.shape)

        def on_step(step, x0, x, total):
            mm.throw_exception_if_processing_interrupted()
            if callback is not None:
                callback(step, x0, x, total)

        extra_args = {"model_options": {"transformer_options": {"sample_sigmas": sigmas}}, "seed": seed}
        self._run = (denoiser, shapes)
        try:
            with use_attention_backend(attention):
                samples = sampler.sample(self, sigmas.to(device), extra_args, on_step, packed_noise.to(device),
                                         packed_latent.to(device), None, disable_pbar)
        finally:
            self._run = None
            if parallel is not None:
                denoiser.close()
        video_out, audio_out = comfy.utils.unpack_latents(samples.float(), shapes)
        if denoiser.known is not None:  # the kept parts: the given latents exactly
            video_out, audio_out = denoiser.known.finish(video_out, audio_out)
        raw = denormalise_video_latents(video_out).cpu()
        if video_mask is not None:  # the given raw latents, not a normalisation round trip
            raw = blend(raw, video_raw, video_mask)
        if options.cache_threshold > 0:
            report = cache_report(denoiser.stats)
            log.info("MOVA Guider: %s (threshold %g)", report, options.cache_threshold)
            show_text(p.node_id, report)
        return nested([raw, audio_out.float().cpu()])

    def __call__(self, x, sigma, model_options=None, seed=None):
        """The stock sampler's model call: packed latents at ``sigma`` -> packed denoised prediction, through the
        PREDICT_NOISE wrappers in the guider's ``model_options`` (as CFGGuider calls its prediction)."""
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.PREDICT_NOISE,
                                                            self.model_options, is_model_options=True)
        executor = comfy.patcher_extension.WrapperExecutor.new_class_executor(self.predict_noise, self, wrappers)
        return executor.execute(x, sigma, model_options or {}, seed)

    def predict_noise(self, x, sigma, model_options=None, seed=None):
        """One prediction with the guider's ``cfg`` as it is now."""
        mm.throw_exception_if_processing_interrupted()
        if self._run is None:
            raise RuntimeError("the MOVA Guider was called outside a sampling run")
        denoiser, shapes = self._run
        video, audio = comfy.utils.unpack_latents(x, shapes)
        level = float(torch.as_tensor(sigma).reshape(-1)[0])
        out = denoiser(video, audio, level, cfg=float(self.cfg))
        denoised = comfy.utils.pack_latents([out.video.to(x.dtype), out.audio.to(x.dtype)])[0]
        post = (model_options or {}).get("sampler_post_cfg_function", [])
        if post:  # CFG++ samplers read the prompt's and the negative prompt's predictions
            cond = comfy.utils.pack_latents([t.to(x.dtype) for t in out.cond])[0]
            uncond = comfy.utils.pack_latents([t.to(x.dtype) for t in out.uncond])[0]
            for fn in post:
                denoised = fn({"denoised": denoised, "cond": None, "uncond": None, "model": self.inner_model,
                               "uncond_denoised": uncond, "cond_denoised": cond, "sigma": sigma,
                               "model_options": model_options, "input": x, "cond_scale": self.cfg})
        return denoised


def guider_sigmas(guider, steps: int, scheduler: str) -> torch.Tensor:
    """SIGMAS [steps+1] for ``guider`` (a JointGuider): MOVA's official step sigmas for its shift and release
    ("official"), else the stock ComfyUI scheduler ``scheduler`` on its flow matching with that shift."""
    if not isinstance(guider, JointGuider):
        raise ValueError(f"guider: expected the MOVA Guider, got {type(guider).__name__}: connect the MOVA Guider "
                         "(the sigmas follow its shift and release)")
    if scheduler == OFFICIAL_SCHEDULE:
        return make_schedule(steps, guider.shift, guider.scheduler_config, snap=True).step_sigmas.clone()
    if scheduler not in comfy.samplers.SCHEDULER_NAMES:
        raise ValueError(f"scheduler {scheduler!r} is not one of {OFFICIAL_SCHEDULE}, "
                         f"{', '.join(comfy.samplers.SCHEDULER_NAMES)}")
    return comfy.samplers.calculate_sigmas(guider.inner_model.model_sampling, scheduler, steps).float().cpu()
