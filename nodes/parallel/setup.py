"""MOVA Parallel's settings and what the workers are told to load (plain Python; no ComfyUI import)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

import torch

from ...mova_model.parallel.plan import ParallelPlan, plan_for, plan_problems
from ...mova_model.parallel.remote import model_spec, models_description
from ...mova_model.parallel.sequence import YUNCHANG_HINT
from ...mova_model.sampling.sampler import SamplingOptions
from ..handles import LoadedPart

CPU_PREFIX = "cpu:"


def parse_devices(text: str, gpu_count: int, platform: str = sys.platform) -> tuple[str, ...]:
    """The devices a ``devices`` widget value names: 'all' (every GPU), GPU numbers '0,1,3', or 'cpu:N' (N
    processes on the CPU, gloo: for trying a setup without GPUs). A ValueError says what to write instead."""
    value = text.strip().lower().replace(" ", "")
    if value.startswith(CPU_PREFIX):
        count = value[len(CPU_PREFIX):]
        if not count.isdigit() or not 2 <= int(count) <= 16:
            raise ValueError(f"devices {text!r}: write cpu:N with N from 2 to 16 (N processes on the CPU)")
        return ("cpu",) * int(count)
    if platform == "win32":
        raise ValueError("devices: several GPUs need NCCL, which runs on Linux only (on Windows use WSL2); "
                         "cpu:N runs the processes on the CPU")
    if value == "all":
        if gpu_count < 2:
            raise ValueError(f"devices 'all': ComfyUI sees {gpu_count} GPU(s), a parallel run needs 2 or more "
                             "(cpu:2 tries the setup on the CPU)")
        return tuple(f"cuda:{i}" for i in range(gpu_count))
    parts = value.split(",")
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"devices {text!r}: write all, GPU numbers such as 0,1 or 0,1,2,3, or cpu:2")
    indices = [int(p) for p in parts]
    if len(set(indices)) != len(indices):
        raise ValueError(f"devices {text!r} names a GPU twice: each process needs a GPU of its own")
    missing = [i for i in indices if i >= gpu_count]
    if missing:
        raise ValueError(f"devices {text!r}: GPU {missing[0]} does not exist, ComfyUI sees {gpu_count} "
                         f"(numbers 0 to {gpu_count - 1})" if gpu_count else
                         f"devices {text!r}: ComfyUI sees no GPU; cpu:2 runs the setup on the CPU")
    if len(indices) < 2:
        raise ValueError(f"devices {text!r}: a parallel run needs 2 or more GPUs (leave MOVA Parallel out for one)")
    return tuple(f"cuda:{i}" for i in indices)


@dataclass(frozen=True)
class ParallelSetup:
    """What MOVA Parallel chose: the devices (one worker process each), the mode, FSDP2, block swap per worker,
    and whether the workers stay between runs."""

    devices: tuple[str, ...]
    mode: str
    shard_weights: bool = False
    swap_blocks: int = 0
    keep_loaded: bool = True

    @property
    def plan(self) -> ParallelPlan:
        return plan_for(self.mode, len(self.devices), self.shard_weights)

    def describe(self) -> str:
        return f"{len(self.devices)} workers on {', '.join(self.devices)}: {self.plan.describe()}"


def make_setup(devices: str, mode: str, shard_weights: bool, swap_blocks: int, keep_loaded: bool,
               gpu_count: int) -> ParallelSetup:
    """The setup of MOVA Parallel's widgets; a ValueError naming the widget and the fix when it cannot run."""
    setup = ParallelSetup(parse_devices(devices, gpu_count), mode, bool(shard_weights), int(swap_blocks),
                          bool(keep_loaded))
    if setup.swap_blocks < 0:
        raise ValueError(f"swap_blocks {swap_blocks} must be 0 (off) or more")
    setup.plan  # the mode's own limits (e.g. cfg on more than 3 devices)
    return setup


def check_run(setup: ParallelSetup, high: LoadedPart, options: SamplingOptions, has_negative: bool) -> None:
    """Refuse, before any worker starts, a run the plan cannot do (a ValueError listing every problem)."""
    passes = max(options.guidance(step).passes(has_negative) for step in range(options.steps))
    problems = plan_problems(setup.plan, high.model.config.num_heads, passes, options.compile, options.attention,
                             setup.swap_blocks)
    if setup.plan.ulysses > 1 and importlib.util.find_spec("yunchang") is None:
        problems.append(f"Ulysses needs the yunchang package: {YUNCHANG_HINT}; or choose mode cfg")
    if setup.swap_blocks >= high.model.config.num_layers:
        problems.append(f"swap_blocks {setup.swap_blocks} would keep all {high.model.config.num_layers} blocks "
                        "of the video expert off the GPU: use fewer")
    if problems:
        raise ValueError(f"MOVA Parallel ({setup.mode} on {len(setup.devices)} devices): " + "; ".join(problems))


def _loras(part: LoadedPart, prefix: str = "") -> list[dict]:
    """The part's LoRAs (MOVA LoRA Loader) as the workers merge them; ``prefix`` picks the audio DiT's or the
    bridge's weights of the audio tower."""
    loras = []
    for patches, strength in part.loras:
        mine = {key[len(prefix):]: {"down": p.down, "up": p.up, "scale": p.scale}
                for key, p in patches.items() if key.startswith(prefix)}
        if mine:
            loras.append({"patches": mine, "strength": float(strength)})
    return loras


def models_for(setup: ParallelSetup, high: LoadedPart, low: LoadedPart, tower: LoadedPart) -> dict:
    """What the workers load: the files the loaders read, fp8 where they hold fp8, the LoRAs, in the compute
    dtype of the high-noise expert."""
    for part, name in ((high, "high_noise_expert"), (low, "low_noise_expert"), (tower, "audio_tower")):
        if not part.files:
            raise ValueError(f"{name}: MOVA Parallel needs the networks of the MOVA loaders (the workers load the "
                             "same files), not networks made another way")
    experts = [model_spec(part.files[0], fp8=part.fp8, loras=_loras(part)) for part in (high, low)]
    audio_dit = model_spec(tower.files[0], fp8=tower.fp8, loras=_loras(tower, "audio_dit."))
    bridge = model_spec(tower.files[1], fp8=tower.fp8, loras=_loras(tower, "bridge."))
    return models_description(experts, audio_dit, bridge, high.compute_dtype, setup.swap_blocks)


def worker_bytes(setup: ParallelSetup, high: LoadedPart, low: LoadedPart, tower: LoadedPart) -> int:
    """The weight bytes one worker holds (for ComfyUI's memory manager on the device it shares)."""
    def size(part: LoadedPart) -> int:
        return sum(p.numel() * p.element_size() for p in part.model.parameters())

    experts = size(high) + size(low)
    if setup.shard_weights:
        experts //= len(setup.devices)
    return experts + size(tower)


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
