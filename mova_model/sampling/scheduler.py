"""MOVA's flow-matching schedule: shifted sigmas, timesteps = 1000 * sigma, Euler steps.

The official scheduler advances each step between sigmas looked up on its 1000-step
*training* grid (the nearest training timestep to the inference timestep); ``snap=True``
reproduces that, ``snap=False`` uses the exact inference sigmas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..configs import SchedulerConfig


def shifted_sigmas(num_steps: int, shift: float, config: SchedulerConfig) -> torch.Tensor:
    """Inference sigmas [num_steps], float32, from sigma_max down to (not reaching) sigma_min."""
    if num_steps < 1:
        raise ValueError(f"steps must be at least 1, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    start = config.sigma_min + (config.sigma_max - config.sigma_min)
    if config.extra_one_step:
        base = torch.linspace(start, config.sigma_min, num_steps + 1)[:-1]
    else:
        base = torch.linspace(start, config.sigma_min, num_steps)
    return shift * base / (1 + (shift - 1) * base)


@dataclass(frozen=True)
class Schedule:
    """One modality's schedule: model timesteps [N], and the sigmas each Euler step goes from/to [N+1]."""

    timesteps: torch.Tensor
    step_sigmas: torch.Tensor

    def euler_step(self, x: torch.Tensor, velocity: torch.Tensor, i: int) -> torch.Tensor:
        """x at step i -> x at step i+1 (the last step lands on sigma 0)."""
        delta = (self.step_sigmas[i + 1] - self.step_sigmas[i]).item()
        return x + velocity * delta


def make_schedule(num_steps: int, shift: float, config: SchedulerConfig, snap: bool = True) -> Schedule:
    """The schedule for ``num_steps`` steps at ``shift`` (official stepping when ``snap``)."""
    sigmas = shifted_sigmas(num_steps, shift, config)
    timesteps = sigmas * config.num_train_timesteps
    if snap:
        train_sigmas = shifted_sigmas(config.num_train_timesteps, config.shift, config)
        train_timesteps = train_sigmas * config.num_train_timesteps
        nearest = torch.argmin((train_timesteps[None, :] - timesteps[:, None]).abs(), dim=1)
        sigmas = train_sigmas[nearest]
    end = torch.tensor([0.0], dtype=sigmas.dtype)
    return Schedule(timesteps=timesteps, step_sigmas=torch.cat([sigmas, end]))


def match_official_schedule(sigmas, shift: float, config: SchedulerConfig) -> Schedule | None:
    """The official schedule (snapped stepping) whose step sigmas are exactly ``sigmas`` (N+1 values, the last 0),
    or None: how a sampler handed MOVA's official step sigmas is told the official timesteps."""
    values = [float(s) for s in sigmas]
    if len(values) < 2:
        return None
    schedule = make_schedule(len(values) - 1, shift, config, snap=True)
    return schedule if schedule.step_sigmas.tolist() == values else None


def reshift_sigma(sigma: float, shift: float, new_shift: float) -> tuple[float, float]:
    """A sigma of a schedule shifted by ``shift`` -> (the sigma at the same point of the schedule shifted by
    ``new_shift``, its derivative d new / d sigma). Both schedules share the unshifted position u:
    sigma = s·u / (1 + (s−1)·u)."""
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma {sigma} is outside 0..1 (flow matching)")
    u = sigma / (shift - (shift - 1.0) * sigma)
    du = shift / (shift - (shift - 1.0) * sigma) ** 2
    denominator = 1.0 + (new_shift - 1.0) * u
    return new_shift * u / denominator, new_shift / denominator ** 2 * du
