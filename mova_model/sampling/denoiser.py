"""MOVA as a denoiser for any sampler that walks a list of sigmas (ComfyUI's stock samplers call it).

A sampler hands the joint latent at a sigma and gets back the "denoised" prediction D of the flow-matching
convention: (x − D) / σ is the step's velocity, so Euler's x + (x − D)/σ · (σ_next − σ) is MOVA's step
x + v · (σ_next − σ). Everything MOVA does around one step happens here, per call: the expert switch at the
boundary (with a hook to load and unload experts), text CFG, dual CFG, per-modality audio CFG, the CFG cut-off,
step caching, kept regions (noise masks) and the NaN check.

Timesteps. The towers are told timestep = 1000 · σ, except on MOVA's official schedule: the official sampler steps
between sigmas snapped to its training grid while telling the towers the unsnapped timesteps. When the sigma list
is exactly that schedule's step sigmas (``scheduler.match_official_schedule``), a call at its i-th sigma gets the
official i-th timestep, so Euler over these sigmas is MOVA Sampler's run.

Audio shift. With ``audio_shift`` the audio walks its own schedule while the sampler walks the video's. The audio
tower is told the sigma at the same point of the audio schedule, and its velocity is scaled by d σ_audio / d σ so
that the sampler's step in σ moves the audio along its own sigmas (on the official schedule by the exact ratio of
the two steps, so Euler again equals MOVA Sampler). Samplers that add noise (ancestral, SDE) add the video's
amount to the audio too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..memory.speed import apply_speed_options
from ..networks.attention import resolve_attention_backend
from .guidance import guided_velocity
from .joint import JointOutput, joint_forward
from .known_regions import KnownRegions
from .sampler import MovaTowers, SamplingOptions, check_finite_step, check_inputs, expert_index
from .scheduler import make_schedule, match_official_schedule, reshift_sigma
from .step_cache import StepCache


@dataclass
class Denoised:
    """One call's predictions [video [B,16,T,h,w], audio [B,C,L]], MOVA's normalised space: the guided one, and
    those of the prompt's pass and the negative prompt's pass (for ComfyUI's CFG++ samplers)."""

    video: torch.Tensor
    audio: torch.Tensor
    cond: tuple[torch.Tensor, torch.Tensor]
    uncond: tuple[torch.Tensor, torch.Tensor]


def prepare_speed(towers: MovaTowers, options: SamplingOptions, device) -> tuple[str, list[str]]:
    """(the attention backend to run with, the speed settings applied): the same as ``sample`` does before a run.
    A backend that cannot run on ``device`` stops here."""
    attention = resolve_attention_backend(options.attention, device)
    models = [m for m in (*towers.video_experts, towers.audio_dit, towers.bridge) if m is not None]
    return attention, apply_speed_options(models, options.compile, options.fp8_compute, device)


class JointDenoiser:
    """Call it with the sampler's latents (video [B,16,T,h,w] normalised, audio [B,C,L]) and sigma.

    ``sigmas`` is the whole list the sampler walks (N+1 values): it gives each call its step (for the CFG cut-off,
    step caching and messages) and tells whether the official timesteps apply. condition [B|1,20,T,h,w],
    contexts [1|B,Lt,4096]; ``video_noise`` / ``audio_noise``: the run's starting noise, which re-noises kept
    regions (``known_video`` / ``known_audio``: ``KnownLatents``). ``before_expert(i)`` runs before expert i
    (0 high-noise, 1 low-noise) is used, each time the expert changes.
    """

    def __init__(self, towers: MovaTowers, condition: torch.Tensor, context_pos: torch.Tensor,
                 context_neg: torch.Tensor | None, video_noise: torch.Tensor, audio_noise: torch.Tensor,
                 options: SamplingOptions, sigmas, *, dtype: torch.dtype, device: torch.device | str,
                 known_video=None, known_audio=None, before_expert: Callable[[int], None] | None = None):
        self.sigmas = [float(s) for s in sigmas]
        if len(self.sigmas) < 2:
            raise ValueError("sigmas: give at least two sigmas (one step)")
        self.steps = len(self.sigmas) - 1
        options = replace(options, steps=self.steps)  # the CFG cut-off counts this list's steps
        check_inputs(condition, context_pos, context_neg, video_noise, audio_noise, options)
        self.towers, self.options, self.dtype = towers, options, dtype
        self.device = torch.device(device)
        b = video_noise.shape[0]
        self.pos = context_pos.to(self.device).expand(b, -1, -1)
        self.neg = None if context_neg is None else context_neg.to(self.device).expand(b, -1, -1)
        self.condition = condition.to(device=self.device, dtype=torch.float32)
        self.known = None
        if known_video is not None or known_audio is not None:
            self.known = KnownRegions(known_video, known_audio, video_noise.to(self.device),
                                      audio_noise.to(self.device), clean_whole=options.clean_given)
        config = options.scheduler
        self.total = config.num_train_timesteps
        self.audio_shift = options.shift if options.audio_shift is None else options.audio_shift
        self.video_schedule = self.audio_schedule = None
        if options.snap_to_training_grid:
            self.video_schedule = match_official_schedule(self.sigmas, options.shift, config)
        if self.video_schedule is not None:
            self.audio_schedule = self.video_schedule if self.audio_shift == options.shift else make_schedule(
                self.steps, self.audio_shift, config, snap=True)
        self.before_expert = before_expert
        self.cache = StepCache(options.cache_threshold)
        self.current_expert: int | None = None
        self._parts: dict = {}
        self._cfg: float | None = None

    @property
    def official(self) -> bool:
        """Whether the sigmas are MOVA's official schedule (the towers get the official timesteps)."""
        return self.video_schedule is not None

    @property
    def stats(self) -> dict:
        return {"computed_steps": self.cache.computed, "skipped_steps": self.cache.skipped}

    def step_index(self, sigma: float) -> int:
        """The step a call at ``sigma`` belongs to: how many of the list's sigmas lie above it (0..N-1)."""
        return min(sum(1 for s in self.sigmas if s > sigma), self.steps - 1)

    def timesteps(self, sigma: float) -> tuple[int, float, float, float]:
        """(step, video timestep, audio timestep, audio rate) for a call at ``sigma``; the audio rate scales the
        audio velocity so that a step in the sampler's sigma moves the audio along its own schedule."""
        i = self.step_index(sigma)
        if self.video_schedule is not None and sigma == self.sigmas[i]:
            t_video = float(self.video_schedule.timesteps[i])
            t_audio = float(self.audio_schedule.timesteps[i])
            if self.audio_schedule is self.video_schedule:
                return i, t_video, t_audio, 1.0
            audio_step = float(self.audio_schedule.step_sigmas[i + 1] - self.audio_schedule.step_sigmas[i])
            return i, t_video, t_audio, audio_step / (self.sigmas[i + 1] - self.sigmas[i])
        if self.audio_shift == self.options.shift:
            return i, sigma * self.total, sigma * self.total, 1.0
        audio_sigma, rate = reshift_sigma(sigma, self.options.shift, self.audio_shift)
        return i, sigma * self.total, audio_sigma * self.total, rate

    @torch.no_grad()
    def __call__(self, video: torch.Tensor, audio: torch.Tensor, sigma: float, cfg: float | None = None) -> Denoised:
        """The denoised prediction for the sampler's latents at ``sigma`` (float32, on the latents' device); ``cfg``
        overrides the text CFG scale for this call (ComfyUI's per-step CFG)."""
        i, t, t_a, rate = self.timesteps(sigma)
        guidance = self.options.guidance(i, cfg)
        if cfg != self._cfg:  # an override changed the scale: a cached step was guided with another one
            self.cache.reset()
            self._cfg = cfg
        video_now, audio_now = video.float(), audio.float()
        if self.known is not None:  # kept parts: re-noised to the towers' sigmas, or clean with timestep 0
            video_now, audio_now = self.known.model_inputs(video_now, audio_now, t / self.total, t_a / self.total)
            t, t_a = self.known.timesteps(t, t_a)
        experts = self.towers.video_experts
        index = min(expert_index(t, self.options.boundary_ratio, self.total), len(experts) - 1)
        if index != self.current_expert:
            if self.before_expert is not None:
                self.before_expert(index)
            self.current_expert = index
            self.cache.reset()
        expert = experts[index]
        t_video = torch.tensor([t], device=self.device)
        t_audio = torch.tensor([t_a], device=self.device)
        video_in = torch.cat([video_now, self.condition], dim=1)
        out = self.cache.lookup(self.towers, expert, video_in, audio_now, t_video, t_audio, self.dtype,
                                last=i == self.steps - 1)
        if out is None:
            def run(x_v, x_a, ctx, bridge_scale):
                return joint_forward(expert, self.towers.audio_dit, self.towers.bridge, x_v, x_a, ctx, t_video,
                                     t_audio, self.options.fps, bridge_scale=bridge_scale, dtype=self.dtype)
            self._parts = {}
            out = self._guided(run, video_in, audio_now, guidance)
            check_finite_step(out, i + 1, self.steps, index, self.dtype)
            self.cache.store(out)
        return Denoised(*self._denoised(video, audio, out, sigma, rate),
                        cond=self._denoised(video, audio, self._parts["cond"], sigma, rate),
                        uncond=self._denoised(video, audio, self._parts["uncond"], sigma, rate))

    def _guided(self, run, video_in, audio_in, guidance) -> JointOutput:
        # the negative prompt only while text CFG is on (with it off, dual CFG's other pass takes the prompt)
        negative = self.neg if guidance.text_on else None
        return guided_velocity(run, video_in, audio_in, self.pos, negative, guidance, batch=self.options.batch_cfg,
                               parts=self._parts)

    def _denoised(self, video, audio, velocity: JointOutput, sigma: float, rate: float):
        """D = x − σ·v (the audio's velocity times ``rate``), the kept parts exactly the given latents."""
        d_video = video.float() - sigma * velocity.video
        d_audio = audio.float() - (sigma * rate) * velocity.audio
        if self.known is not None:
            d_video, d_audio = self.known.finish(d_video, d_audio)
        return d_video, d_audio
