"""MOVA Guider's checks before a native sampling run (plain Python): the parts belong together and fit the
latents SamplerCustomAdvanced hands over, and the run fits the device."""

from __future__ import annotations

import math

import torch

from ...mova_model.memory.estimate import check_fits, sampling_bytes
from ...mova_model.sampling.sampler import MovaTowers
from ..handles import LoadedPart, MovaConditioning
from ..sampling.run import matching_towers


def check_native_setup(high: LoadedPart, low: LoadedPart, tower: LoadedPart, cond: MovaConditioning,
                       video_shape, audio_shape) -> MovaTowers:
    """The towers, or a ValueError saying what to change: experts swapped, another text encoder, a latent of
    another size than the conditioning, an audio latent of another codec or length."""
    towers = matching_towers(high, low, tower, cond)
    audio_dit, bridge = towers.audio_dit, towers.bridge
    if len(video_shape) != 5 or tuple(video_shape[2:]) != tuple(cond.condition.shape[2:]):
        raise ValueError(
            f"the latent's video part is {tuple(video_shape)} but the conditioning is for latents "
            f"{tuple(cond.condition.shape[2:])}: connect the av_latent and the conditioning of the same MOVA "
            "Conditioning node."
        )
    if len(audio_shape) != 3 or audio_shape[1] != audio_dit.config.in_dim:
        raise ValueError(
            f"the latent's audio part is {tuple(audio_shape)} but the audio DiT takes [B,{audio_dit.config.in_dim},L]: "
            "load the audio VAE (of MOVA Conditioning) and the audio tower from the same MOVA release."
        )
    expected = cond.frames / cond.fps * bridge.config.audio_fps
    if abs(audio_shape[-1] - expected) > 1.5:
        raise ValueError(
            f"the latent's audio part has {audio_shape[-1]} latent steps but {cond.frames} frames at {cond.fps:g} fps "
            f"need about {expected:.0f} at the audio tower's {bridge.config.audio_fps:g} latents/s: load the audio "
            "VAE of the same MOVA release, and connect the av_latent and the conditioning of the same MOVA "
            "Conditioning node."
        )
    return towers


def check_native_memory(high: LoadedPart, tower: LoadedPart, cond: MovaConditioning, batch: int,
                        audio_channels: int, device_memory: int) -> None:
    """Refuse a size whose activations and latents cannot fit the device (as the MOVA Sampler does), naming the
    largest that fits."""
    size = torch.empty((), dtype=high.compute_dtype).element_size()
    configs = high.model.config, tower.model.audio_dit.config
    rate = tower.model.bridge.config.audio_fps  # latents per second: the audio length, at hop 1

    def need(width: int, height: int, frames: int) -> int:
        return batch * sampling_bytes(width, height, frames, cond.fps, rate, 1, audio_channels, *configs, size)

    check_fits(need, cond.width, cond.height, cond.frames, device_memory, "device memory for the sampler's "
               "activations and latents", "Lower width, height or length on MOVA Conditioning (the model weights "
               "are offloaded as needed, the activations are not).")


SIGMA_SLACK = 1e-3  # stock schedulers on MOVA's flow matching start up to 1.0001 (float32 rounding)
USE_MOVA_SCHEDULER = ("connect MOVA Scheduler (its guider input from this MOVA Guider) to SamplerCustomAdvanced's "
                      "sigmas")


def sigma_values(sigmas) -> list[float]:
    """SIGMAS (a 1-D tensor or a sequence of numbers) as floats; a ValueError for any other shape."""
    if isinstance(sigmas, torch.Tensor):
        if sigmas.dim() != 1:
            raise ValueError(f"MOVA Guider: sigmas of shape {tuple(sigmas.shape)}, expected a list [N]; "
                             f"{USE_MOVA_SCHEDULER}")
        return sigmas.double().tolist()
    try:
        return [float(s) for s in sigmas]
    except (TypeError, ValueError):
        raise ValueError(f"MOVA Guider: sigmas of type {type(sigmas).__name__}, expected a list [N] of numbers; "
                         f"{USE_MOVA_SCHEDULER}") from None


def sigma_problem(values: list[float]) -> tuple[str, str] | None:
    """(what is wrong with these sigmas, what to do), or None when MOVA's flow matching takes them: finite, within
    0..1 (1 pure noise, 0 clean), each smaller than the one before (a last 0 included, as ComfyUI's schedules end)."""
    n = len(values)
    for i, s in enumerate(values):
        if not math.isfinite(s):
            return (f"sigma {i + 1} of {n} is {s}: the node that made the SIGMAS failed, not the model",
                    "use more steps or another scheduler there (ComfyUI's kl_optimal gives NaN for 1 step)")
        if s < 0:
            return (f"sigma {i + 1} of {n} is {s:g}, below 0: MOVA's sigmas run from 1 (pure noise) down to 0 (clean)",
                    "")
    if values and max(values) > 1 + SIGMA_SLACK:
        return (f"the sigmas run from {values[0]:g} to {values[-1]:g}, beyond MOVA's 0..1 (flow matching: 1 is pure "
                "noise): another model's schedule (e.g. Karras Scheduler, or Basic Scheduler on an SD model)", "")
    for i in range(n - 1):
        if values[i + 1] >= values[i]:
            return (f"sigma {i + 2} of {n} ({values[i + 1]:g}) is not below the one before it ({values[i]:g}): sigmas "
                    "must fall at every step, from noise to clean", "remove Flip Sigmas or repeated values")
    return None


def check_native_sigmas(sigmas) -> list[float]:
    """The SIGMAS handed to the MOVA Guider as floats, or a ValueError naming the problem and MOVA Scheduler."""
    values = sigma_values(sigmas)
    found = sigma_problem(values)
    if found is not None:
        problem, fix = found
        raise ValueError(f"MOVA Guider: {problem}; {fix + ', or ' if fix else ''}{USE_MOVA_SCHEDULER}")
    return values


def check_scheduler_sigmas(sigmas: torch.Tensor, scheduler: str, steps: int) -> torch.Tensor:
    """MOVA Scheduler's output, checked as the guider will check it; the error names the scheduler and steps."""
    found = sigma_problem(sigma_values(sigmas))
    if found is not None:
        raise ValueError(f"MOVA Scheduler: the {scheduler} scheduler gave unusable sigmas for {steps} steps "
                         f"({found[0]}): use more steps or another scheduler")
    return sigmas
