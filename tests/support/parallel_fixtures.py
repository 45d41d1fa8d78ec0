"""Worker pools for the parallel tests: real processes over gloo on the CPU, on the golden tiny release.

Every wait is bounded (pool start, each job), so a hang fails the test instead of wedging the suite; every pool
is stopped when its test module ends. Degrees come from the golden set's config (its head counts)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from comfyui_mova.mova_model.parallel import remote
from comfyui_mova.mova_model.parallel.plan import ParallelPlan
from comfyui_mova.mova_model.parallel.pool import WorkerPool
from comfyui_mova.mova_model.sampling import sampler
from mova_pack import golden_root
from mova_testing import golden_scheduler

START_TIMEOUT = 180.0   # seconds for the workers to start (2 cores shared with other work)
JOB_TIMEOUT = 180.0     # seconds a job may go without any message
PARITY = 1e-5           # rel. L2 in float32
HAS_YUNCHANG = importlib.util.find_spec("yunchang") is not None
NEEDS_YUNCHANG = pytest.mark.skipif(not HAS_YUNCHANG, reason="yunchang is not installed (pip install yunchang==0.6.4, "
                                    "in the test extra): Ulysses uses its all-to-all")


def golden():
    root = golden_root()
    cases = json.loads((root / "cases.json").read_text())
    return root, cases, load_file(str(root / "cases.safetensors"))


def golden_configs(root) -> dict:
    ckpt = root / "checkpoint"
    return {name: json.loads((ckpt / name / "config.json").read_text())
            for name in ("video_dit", "audio_dit", "dual_tower_bridge")}


def ulysses_worlds(root, largest: int = 3) -> list[int]:
    """The process counts (2 and 3 here) that divide the golden video expert's heads."""
    heads = golden_configs(root)["video_dit"]["num_heads"]
    return [n for n in range(2, largest + 1) if heads % n == 0]


def golden_models(root, fp8: bool = False, compute=torch.float32) -> dict:
    ckpt = root / "checkpoint"
    spec = lambda component: remote.model_spec(ckpt, component, fp8=fp8)  # noqa: E731
    return remote.models_description([spec("video_dit"), spec("video_dit_2")], spec("audio_dit"),
                                     spec("dual_tower_bridge"), compute)


def options(cases, **changes) -> sampler.SamplingOptions:
    values = dict(steps=cases["sample_steps"], cfg_scale=5.0, shift=cases["scheduler"]["shift"],
                  boundary_ratio=cases["boundary_ratio"], fps=cases["fps"], scheduler=golden_scheduler(cases))
    return sampler.SamplingOptions(**{**values, **changes})


def inputs(tensors) -> tuple:
    """(condition, context_pos, context_neg, video_noise, audio_noise) of the golden set."""
    return (tensors["condition"], tensors["context_pos"], tensors["context_neg"], tensors["noise_video"],
            tensors["noise_audio"])


class Pools:
    """One pool per plan, started on first use and stopped at the end (``close``)."""

    def __init__(self):
        self.pools: dict[ParallelPlan, WorkerPool] = {}

    def get(self, plan: ParallelPlan) -> WorkerPool:
        pool = self.pools.get(plan)
        if pool is None or not pool.alive:
            for other in list(self.pools.values()):  # one pool at a time: the machine is small
                other.stop()
            self.pools.clear()
            pool = WorkerPool(plan, ["cpu"] * plan.world, timeout=JOB_TIMEOUT, start_timeout=START_TIMEOUT)
            pool.start()
            self.pools[plan] = pool
        return pool

    def runner(self, plan: ParallelPlan, interrupted=None) -> remote.ParallelRunner:
        return remote.ParallelRunner(self.get(plan), interrupted=interrupted, timeout=JOB_TIMEOUT)

    def close(self):
        for pool in self.pools.values():
            pool.stop()
        self.pools.clear()
