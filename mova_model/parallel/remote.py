"""The host's view of a parallel run: model descriptions, jobs, and sampling through a ``WorkerPool``, with the
same inputs and results as ``sampler.sample`` and ``denoiser.JointDenoiser`` in one process."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch

from ..sampling.denoiser import Denoised, JointDenoiser
from ..sampling.known_regions import KnownLatents
from ..sampling.sampler import SamplingOptions
from .pool import WorkerPool


def _stamp(path: str) -> list:
    """What changes when a model file or folder is replaced: sizes and modification times."""
    p = Path(path)
    files = sorted(p.iterdir()) if p.is_dir() else [p]
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]


def _lora_digest(loras) -> list:
    digest = []
    for lora in loras:
        h = hashlib.sha256()
        for key in sorted(lora["patches"]):
            patch = lora["patches"][key]
            h.update(key.encode())
            for name in ("down", "up"):
                h.update(patch[name].detach().float().cpu().numpy().tobytes())
            h.update(repr(float(patch["scale"])).encode())
        digest.append((h.hexdigest(), float(lora["strength"])))
    return digest


def model_spec(path: str | os.PathLike, component: str | None = None, fp8: bool = False, loras=()) -> dict:
    """One network for the workers: its file or folder (``component``: the sub-folder of a release folder),
    fp8 block weights or not, and LoRAs [{"patches": {key: {"down", "up", "scale"}}, "strength"}]."""
    return {"path": str(path), "component": component, "fp8": bool(fp8), "loras": list(loras)}


def models_description(experts: list[dict], audio_dit: dict, bridge: dict, compute_dtype: torch.dtype,
                       swap_blocks: int = 0) -> dict:
    """What the workers load, with ``key``: a fingerprint of the files, settings and LoRAs (the workers keep the
    towers while the key stays the same)."""
    models = {"experts": experts, "audio_dit": audio_dit, "bridge": bridge,
              "compute_dtype": str(compute_dtype).replace("torch.", ""), "swap_blocks": int(swap_blocks)}
    parts = [*experts, audio_dit, bridge]
    fingerprint = {"settings": [models["compute_dtype"], models["swap_blocks"]],
                   "parts": [(p["path"], p["component"], p["fp8"], _stamp(p["path"]), _lora_digest(p["loras"]))
                             for p in parts]}
    models["key"] = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    return models


def options_values(options: SamplingOptions) -> dict:
    """SamplingOptions as plain values (the workers rebuild them)."""
    return dataclasses.asdict(options)


def _known(known: KnownLatents | None) -> dict | None:
    return None if known is None else {"latents": known.latents.float().cpu(), "mask": known.mask.float().cpu()}


def _cpu(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.detach().cpu()


def run_inputs(condition, context_pos, context_neg, video_noise, audio_noise, options: SamplingOptions,
               known_video=None, known_audio=None) -> dict:
    """The tensors and settings of a run, as a job's values."""
    return {"condition": _cpu(condition), "context_pos": _cpu(context_pos), "context_neg": _cpu(context_neg),
            "video_noise": _cpu(video_noise), "audio_noise": _cpu(audio_noise), "options": options_values(options),
            "known_video": _known(known_video), "known_audio": _known(known_audio)}


class ParallelRunner:
    """Sampling jobs for one pool; sends the full model description only when the workers do not hold it.
    ``interrupted()`` is asked while waiting (True: Cancel); ``timeout``: seconds without any message."""

    def __init__(self, pool: WorkerPool, interrupted: Callable[[], bool] | None = None,
                 timeout: float | None = None):
        self.pool, self.interrupted, self.timeout = pool, interrupted, timeout

    def _models(self, models: dict) -> dict:
        return {"key": models["key"]} if self.pool.models_key == models["key"] else models

    def _run(self, kind: str, job: dict, on_message=None, models: dict | None = None) -> dict | None:
        if models is not None:
            job = {**job, "models": self._models(models)}
            self.pool.models_key = None  # unknown until the job succeeds
        result = self.pool.run(kind, job, on_message=on_message, interrupted=self.interrupted, timeout=self.timeout)
        if models is not None:
            self.pool.models_key = models["key"]
        return result

    def sample(self, models: dict, inputs: dict,
               on_step: Callable[[int, int, torch.Tensor], None] | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``sampler.sample`` on the workers: (video, audio latents on the CPU, stats); ``on_step(step, total,
        the video's middle latent frame [B,16,1,h,w])`` after every step."""
        def on_message(kind, values):
            if kind == "progress" and on_step is not None:
                on_step(values["step"], values["total"], values["preview"])

        result = self._run("sample", inputs, on_message=on_message, models=models)
        return result["video"], result["audio"], result["stats"]

    def denoiser(self, models: dict, local: JointDenoiser, inputs: dict,
                 on_close: Callable[[], None] | None = None) -> "RemoteDenoiser":
        """A ``JointDenoiser`` on the workers, made with the inputs of ``local`` (built here for its checks);
        ``on_close()`` runs when it is closed."""
        job = {**inputs, "sigmas": list(local.sigmas)}
        opened = self._run("open", job, models=models)
        return RemoteDenoiser(self, local, opened, on_close)


class RemoteDenoiser:
    """Called like ``JointDenoiser``: (video, audio, sigma) -> Denoised, computed by the workers. ``known``,
    ``steps``, ``official`` and ``options`` are the local denoiser's; ``stats`` the workers'."""

    def __init__(self, runner: ParallelRunner, local: JointDenoiser, opened: dict,
                 on_close: Callable[[], None] | None = None):
        self.runner, self.local, self.on_close = runner, local, on_close
        self.known, self.steps, self.official, self.options = local.known, local.steps, local.official, local.options
        self.attention, self.speed = opened["attention"], opened["speed"]
        self.stats = {"computed_steps": 0, "skipped_steps": 0}

    def __call__(self, video: torch.Tensor, audio: torch.Tensor, sigma: float, cfg: float | None = None) -> Denoised:
        """``cfg`` overrides the text CFG scale for this call, as in ``JointDenoiser``."""
        out = self.runner._run("denoise", {"video": video.detach().float().cpu(),
                                           "audio": audio.detach().float().cpu(), "sigma": float(sigma),
                                           "cfg": None if cfg is None else float(cfg)})
        self.stats = out["stats"]
        device = video.device
        return Denoised(out["video"].to(device), out["audio"].to(device), cond=tuple(t.to(device) for t in out["cond"]),
                        uncond=tuple(t.to(device) for t in out["uncond"]))

    def close(self) -> None:
        """End the workers' session (call it when the sampling ends, also after an error)."""
        try:
            if self.runner.pool.alive:
                self.runner.pool.run("close", {})
        finally:
            if self.on_close is not None:
                self.on_close()
