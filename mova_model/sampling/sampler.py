"""Joint video+audio sampling: flow-matching Euler steps, text CFG and the expert switch."""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..configs import SchedulerConfig
from ..memory.speed import apply_speed_options, check_speed_options
from ..networks.attention import resolve_attention_backend, use_attention_backend
from ..networks.bridge import DualTowerBridge
from ..networks.dit import WanDiT
from .guidance import NO_GUIDANCE, Guidance, guided_velocity
from .joint import check_towers, joint_forward
from .known_regions import KnownLatents, KnownRegions, check_known
from .scheduler import make_schedule
from .step_cache import StepCache

EXPERT_NAMES = ("the high-noise expert (video_dit)", "the low-noise expert (video_dit_2)")

# callback(step, total, video_latents, audio_latents) after each step; raise inside it to cancel.
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


@dataclass
class MovaTowers:
    """The networks one sampling run needs: the video experts [high-noise, low-noise], audio DiT, bridge."""

    video_experts: Sequence[WanDiT | None]
    audio_dit: WanDiT
    bridge: DualTowerBridge

    def release(self, index: int) -> None:
        """Drop our reference to video expert ``index`` so its memory can be freed."""
        self.video_experts[index] = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __post_init__(self):
        self.video_experts = list(self.video_experts)
        if not 1 <= len(self.video_experts) <= 2:
            raise ValueError("give the high-noise and the low-noise video expert (or one expert for all steps)")
        for expert in self.video_experts:
            check_towers(expert, self.audio_dit, self.bridge)


@dataclass
class SamplingOptions:
    """Defaults are the official MOVA settings (50 steps, CFG 5, shift 5, switch at 0.9)."""

    steps: int = 50
    cfg_scale: float = 5.0
    shift: float = 5.0
    boundary_ratio: float = 0.9
    fps: float = 24.0
    batch_cfg: bool = False          # positive and negative in one batched forward
    snap_to_training_grid: bool = True  # the official scheduler's Euler deltas
    release_high_expert: bool = False   # drop the high-noise expert after the switch (frees its memory)
    audio_cfg_scale: float | None = None  # text CFG for audio (None: cfg_scale)
    audio_shift: float | None = None      # sigma shift for audio ("dual sigma shift"; None: shift)
    bridge_cfg_scale: float = 1.0         # dual CFG s_B (1.0: off, the official behaviour; 3 passes otherwise)
    cfg_cutoff: float = 1.0               # share of steps that use CFG; later steps run one plain pass
    cache_threshold: float = 0.0          # step caching (0: off); see step_cache.py
    attention: str = "auto"               # attention backend (see attention.py)
    compile: str = "off"                  # "off", "blocks", "blocks-max-autotune" (see speed.py)
    fp8_compute: str = "auto"             # fp8 weights: "auto", "dequant", "fp8_matmul" (see speed.py)
    clean_given: bool = False             # a modality given whole is fed clean at timestep 0 (see known_regions.py)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise a ValueError naming the first option that is not a usable number (NaN, inf, out of range)."""
        def number(value) -> bool:
            return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps {self.steps!r} must be a whole number of at least 1")
        rules = [
            ("cfg", self.cfg_scale, number(self.cfg_scale), "must be a finite number"),
            ("shift", self.shift, number(self.shift) and self.shift > 0, "must be a positive number"),
            ("boundary_ratio", self.boundary_ratio, number(self.boundary_ratio) and 0 <= self.boundary_ratio <= 1,
             "must lie in 0..1"),
            ("fps", self.fps, number(self.fps) and self.fps > 0, "must be a positive number"),
            ("audio_cfg", self.audio_cfg_scale, self.audio_cfg_scale is None or number(self.audio_cfg_scale),
             "must be a finite number (or unset: the sampler's cfg)"),
            ("audio_shift", self.audio_shift, self.audio_shift is None or number(self.audio_shift)
             and self.audio_shift > 0, "must be positive (or unset: the sampler's shift)"),
            ("bridge_cfg", self.bridge_cfg_scale, number(self.bridge_cfg_scale), "must be a finite number"),
            ("cfg_cutoff", self.cfg_cutoff, number(self.cfg_cutoff) and 0 <= self.cfg_cutoff <= 1,
             "must lie in 0..1 (the share of steps that use CFG)"),
            ("cache_threshold", self.cache_threshold, number(self.cache_threshold) and self.cache_threshold >= 0,
             "must be 0 (off) or positive"),
        ]
        for name, value, ok, rule in rules:
            if not ok:
                raise ValueError(f"{name} {value!r} {rule}")

    def guidance(self, step: int, cfg: float | None = None) -> Guidance:
        """The guidance scales for ``step`` (0-based): none after the CFG cut-off. ``cfg`` stands in for
        ``cfg_scale`` for this step (a per-step override; the audio follows it unless audio_cfg_scale is set)."""
        if step >= self.cfg_cutoff * self.steps:
            return NO_GUIDANCE
        text = self.cfg_scale if cfg is None else cfg
        audio = text if self.audio_cfg_scale is None else self.audio_cfg_scale
        return Guidance(video_text=text, audio_text=audio, bridge=self.bridge_cfg_scale)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


class NonFiniteError(ValueError):
    """A sampling step produced NaN or infinite values; the message names the step, the expert and the likely cause."""


def check_finite_step(out, step: int, total: int, expert: int, dtype: torch.dtype) -> None:
    """Raise NonFiniteError when a step's guided velocity holds NaN or inf."""
    bad = [name for name, x in (("video", out.video), ("audio", out.audio)) if not bool(torch.isfinite(x).all())]
    if not bad:
        return
    cause = ("an fp16 overflow (load the experts and the audio tower with weight_dtype bf16)"
             if dtype == torch.float16 else "numbers too large for the compute dtype")
    raise NonFiniteError(
        f"step {step} of {total} ({EXPERT_NAMES[expert]}) produced NaN or infinite values in the "
        f"{' and '.join(bad)} prediction ({dtype}). Likely causes: {cause}, or a broken LoRA (unplug it or lower its "
        "strength), or damaged weights (download them again)."
    )


def make_noise(video_shape, audio_shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded float32 noise on the CPU: video first, then audio, from one generator."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    video = torch.randn(tuple(video_shape), generator=gen, dtype=torch.float32)
    audio = torch.randn(tuple(audio_shape), generator=gen, dtype=torch.float32)
    return video, audio


def expert_index(timestep: float, boundary_ratio: float, num_train_timesteps: int) -> int:
    """0 (high-noise expert) while timestep >= boundary, else 1 (low-noise expert)."""
    return 0 if timestep >= boundary_ratio * num_train_timesteps else 1


def check_inputs(condition, context_pos, context_neg, video_noise, audio_noise, opts):
    """Raise a clear error when the inputs of a sampling run do not fit together or hold NaN / inf."""
    opts.check()  # the options may have been changed since they were built
    b = video_noise.shape[0]
    if condition.shape[0] != b or condition.shape[2:] != video_noise.shape[2:]:
        raise ValueError(
            f"the image condition {tuple(condition.shape)} does not fit the video latent {tuple(video_noise.shape)}: "
            "build both for the same width, height, length and batch"
        )
    for name, ctx in (("positive", context_pos), ("negative", context_neg)):
        if ctx is not None and ctx.shape[0] not in (1, b):
            raise ValueError(f"{name} prompt batch is {ctx.shape[0]} but the latent batch is {b}: give 1 or {b} prompts")
    if audio_noise.shape[0] != b:
        raise ValueError(f"audio latent batch {audio_noise.shape[0]} != video latent batch {b}")
    for name, x in (("the image condition", condition), ("the prompt's text states", context_pos),
                    ("the negative prompt's text states", context_neg), ("the video noise", video_noise),
                    ("the audio noise", audio_noise)):
        if x is not None and not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"{name} hold NaN or infinite values: build them again (a VAE or text encoder "
                                 "in fp16 can overflow; load it in bf16 or fp32).")
    if context_neg is None and (opts.cfg_scale != 1.0 or opts.audio_cfg_scale not in (None, 1.0)):
        raise ValueError(f"CFG {opts.cfg_scale} needs a negative prompt: connect one, or set CFG to 1.0")
    if not 0.0 <= opts.cfg_cutoff <= 1.0:
        raise ValueError(f"cfg_cutoff {opts.cfg_cutoff} must lie in 0..1 (the share of steps that use CFG)")
    check_speed_options(opts.compile, opts.fp8_compute)


@torch.no_grad()
def sample(
    towers: MovaTowers,
    condition: torch.Tensor,
    context_pos: torch.Tensor,
    context_neg: torch.Tensor | None,
    video_noise: torch.Tensor,
    audio_noise: torch.Tensor,
    options: SamplingOptions | None = None,
    callback: StepCallback | None = None,
    before_expert: Callable[[int], None] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    stats: dict | None = None,
    known_video: KnownLatents | None = None,
    known_audio: KnownLatents | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoise video [B,16,T,h,w] and audio [B,C,L] latents from noise; returns float32 latents.

    condition [B,20,T,h,w] (mask + normalised image latents), contexts [1 or B, Lt, 4096].
    ``before_expert(i)`` runs when expert i (0 high, 1 low) is about to be used (load/offload hook).
    ``device`` is where the latents live (default: the first expert's); give it when a memory manager
    keeps some weights elsewhere (offloaded or partially loaded experts).
    ``stats`` (a dict) receives computed_steps / skipped_steps (step caching), the attention backend
    used and the speed settings applied.
    ``known_video`` / ``known_audio``: given latents with their noise masks (1 generate, 0 keep); the kept
    parts are re-noised at each step (or fed clean at timestep 0, ``options.clean_given``, when a modality is
    given whole) and equal the given latents in the result.
    """
    opts = options or SamplingOptions()
    check_inputs(condition, context_pos, context_neg, video_noise, audio_noise, opts)
    check_known(known_video, tuple(video_noise.shape), "video")
    check_known(known_audio, tuple(audio_noise.shape), "audio")
    expert0 = towers.video_experts[0]
    device = torch.device(device) if device is not None else next(expert0.parameters()).device
    dtype = dtype or next(expert0.parameters()).dtype
    attention = resolve_attention_backend(opts.attention, device)  # a missing backend stops here
    b = video_noise.shape[0]
    pos = context_pos.to(device).expand(b, -1, -1)
    neg = None if context_neg is None else context_neg.to(device).expand(b, -1, -1)
    condition = condition.to(device=device, dtype=torch.float32)
    video = video_noise.to(device=device, dtype=torch.float32)
    audio = audio_noise.to(device=device, dtype=torch.float32)
    known = None
    if known_video is not None or known_audio is not None:
        known = KnownRegions(known_video, known_audio, video, audio, clean_whole=opts.clean_given)

    models = [m for m in (*towers.video_experts, towers.audio_dit, towers.bridge) if m is not None]
    speed = apply_speed_options(models, opts.compile, opts.fp8_compute, device)
    if stats is not None:
        stats.update(attention=attention, speed=speed)
    with use_attention_backend(attention):
        return _denoise(towers, condition, pos, neg, video, audio, opts, callback, before_expert, dtype, device,
                        stats, known)


def _denoise(towers, condition, pos, neg, video, audio, opts, callback, before_expert, dtype, device, stats,
             known=None):
    schedule = make_schedule(opts.steps, opts.shift, opts.scheduler, snap=opts.snap_to_training_grid)
    audio_schedule = schedule if opts.audio_shift in (None, opts.shift) else make_schedule(
        opts.steps, opts.audio_shift, opts.scheduler, snap=opts.snap_to_training_grid)
    cache = StepCache(opts.cache_threshold)
    current = None
    total = opts.scheduler.num_train_timesteps
    for i, (t, t_a) in enumerate(zip(schedule.timesteps.tolist(), audio_schedule.timesteps.tolist())):
        if known is not None:  # kept parts: re-noised to this step's sigma, or clean with timestep 0
            video, audio = known.model_inputs(video, audio, t / total, t_a / total)
            t, t_a = known.timesteps(t, t_a)
        index = min(expert_index(t, opts.boundary_ratio, total), len(towers.video_experts) - 1)
        if index != current:
            if before_expert is not None:
                before_expert(index)
            if current == 0 and opts.release_high_expert:
                towers.release(0)
            current = index
            cache.reset()
        expert = towers.video_experts[index]
        t_video, t_audio = torch.tensor([t], device=device), torch.tensor([t_a], device=device)
        video_in = torch.cat([video, condition], dim=1)
        out = cache.lookup(towers, expert, video_in, audio, t_video, t_audio, dtype, last=i == opts.steps - 1)
        if out is None:
            run = lambda x_v, x_a, ctx, bridge_scale: joint_forward(  # noqa: E731
                expert, towers.audio_dit, towers.bridge, x_v, x_a, ctx, t_video, t_audio, opts.fps,
                bridge_scale=bridge_scale, dtype=dtype)
            out = guided_velocity(run, video_in, audio, pos, neg, opts.guidance(i), batch=opts.batch_cfg)
            check_finite_step(out, i + 1, opts.steps, index, dtype)
            cache.store(out)
        video = schedule.euler_step(video, out.video, i)
        audio = audio_schedule.euler_step(audio, out.audio, i)
        if callback is not None:
            callback(i + 1, opts.steps, video, audio)
    if known is not None:
        video, audio = known.finish(video, audio)
    if stats is not None:
        stats.update(computed_steps=cache.computed, skipped_steps=cache.skipped)
    return video, audio
