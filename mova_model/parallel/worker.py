"""One worker process of a parallel run: joins the others, loads the towers, and serves the host's jobs.

Started by ``pool.WorkerPool`` (through ``worker_main.py``) with its settings in the environment. Every worker
receives every job; the first one (rank 0) sends the results and the progress. Jobs:

- ``sample``: a whole MOVA Sampler run (``sampler.sample``), progress after every step, Cancel between steps;
- ``open`` / ``denoise`` / ``close``: a ``JointDenoiser`` for ComfyUI's own samplers, one call per message;
- ``release``: drop the towers (free the device memory); ``stop``: leave.

The towers stay loaded between jobs while the host sends the same model description (``models["key"]``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from datetime import timedelta
from multiprocessing.connection import Listener

import torch
import torch.distributed as dist

from ..networks.attention import use_attention_backend
from ..configs import SchedulerConfig
from ..sampling.denoiser import JointDenoiser, prepare_speed
from ..sampling.known_regions import KnownLatents
from ..sampling.sampler import SamplingOptions, sample
from . import channel
from .context import parallel_run
from .groups import ParallelGroups, make_groups
from .plan import ParallelPlan
from .worker_models import WorkerTowers

log = logging.getLogger("mova.parallel.worker")


class Cancelled(Exception):
    """The host asked the run to stop (ComfyUI's Cancel)."""


def options_from(values: dict) -> SamplingOptions:
    values = dict(values)
    values["scheduler"] = SchedulerConfig(**values["scheduler"])
    return SamplingOptions(**values)


def known_from(values: dict | None, device) -> KnownLatents | None:
    if values is None:
        return None
    return KnownLatents(values["latents"].to(device), values["mask"].to(device))


class Worker:
    def __init__(self, conn, groups: ParallelGroups):
        self.conn, self.groups = conn, groups
        self.device = groups.device
        self.first = groups.rank == 0
        self.loaded: WorkerTowers | None = None
        self.session = None
        self.cancel = False

    def serve(self) -> None:
        while True:
            try:
                kind, job = channel.receive(self.conn)
            except EOFError:  # the host has gone
                return
            if kind == "stop":
                return
            if kind == "cancel":  # arrived after the run it was meant for ended
                continue
            self.cancel = False
            try:
                reply = getattr(self, "job_" + kind)(job)
            except Cancelled:
                channel.send(self.conn, "cancelled")
                continue
            except Exception as exc:  # reported to the host, which decides whether the pool can go on
                channel.send(self.conn, "error", text=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc())
                continue
            if self.first and reply is not None:
                channel.send(self.conn, "result", **reply)
            else:
                channel.send(self.conn, "done")

    def towers(self, models: dict) -> WorkerTowers:
        if self.loaded is None or self.loaded.key != models["key"]:
            if "experts" not in models:
                raise RuntimeError("the host sent a model key this worker has not loaded")
            if self.loaded is not None:
                self.loaded.release()
                self.loaded = None
            self.log(f"loading the towers on {self.device} ({self.groups.plan.describe()})")
            self.loaded = WorkerTowers(models, self.groups)
        return self.loaded

    def log(self, text: str) -> None:
        if self.first:
            channel.send(self.conn, "log", text=text)

    def step_done(self, step: int, total: int, video: torch.Tensor, audio: torch.Tensor) -> None:
        """After each step: progress with the middle latent frame (rank 0), then all stop together on Cancel."""
        if self.first:
            middle = video.shape[2] // 2
            channel.send(self.conn, "progress", step=step, total=total,
                         preview=video[:, :, middle:middle + 1].float().cpu())
        while not self.cancel and self.conn.poll():
            kind, _ = channel.receive(self.conn)
            self.cancel = kind == "cancel"
        if self.groups.agree(self.cancel):
            raise Cancelled

    def job_sample(self, job: dict) -> dict:
        loaded = self.towers(job["models"])
        device, dtype = self.device, loaded.compute
        stats = {}
        with parallel_run(self.groups.sequence, self.groups.cfg):
            video, audio = sample(
                loaded.towers, job["condition"], job["context_pos"], job["context_neg"], job["video_noise"],
                job["audio_noise"], options_from(job["options"]), callback=self.step_done,
                before_expert=loaded.before_expert, dtype=dtype, device=device, stats=stats,
                known_video=known_from(job["known_video"], device), known_audio=known_from(job["known_audio"], device))
        return {"video": video.cpu(), "audio": audio.cpu(), "stats": {**_plain(stats), **self.shares()}}

    def shares(self) -> dict:
        """What this process's part of the last forward was (for logs and tests)."""
        sp = self.groups.sequence
        return {} if sp is None else {"video_tokens": [sp.chunk, sp.length]}

    def job_open(self, job: dict) -> dict:
        loaded = self.towers(job["models"])
        device = self.device
        denoiser = JointDenoiser(
            loaded.towers, job["condition"], job["context_pos"], job["context_neg"], job["video_noise"],
            job["audio_noise"], options_from(job["options"]), job["sigmas"], dtype=loaded.compute, device=device,
            known_video=known_from(job["known_video"], device), known_audio=known_from(job["known_audio"], device),
            before_expert=loaded.before_expert)
        attention, speed = prepare_speed(loaded.towers, denoiser.options, device)
        self.session = (denoiser, attention)
        return {"attention": attention, "speed": speed, "steps": denoiser.steps, "official": denoiser.official}

    def job_denoise(self, job: dict) -> dict:
        if self.session is None:
            raise RuntimeError("denoise without an open session")
        denoiser, attention = self.session
        with use_attention_backend(attention), parallel_run(self.groups.sequence, self.groups.cfg):
            out = denoiser(job["video"].to(self.device), job["audio"].to(self.device), float(job["sigma"]),
                           cfg=job.get("cfg"))
        return {"video": out.video.cpu(), "audio": out.audio.cpu(), "cond": [t.cpu() for t in out.cond],
                "uncond": [t.cpu() for t in out.uncond], "stats": {**denoiser.stats, **self.shares()}}

    def job_close(self, job: dict) -> None:
        self.session = None

    def job_release(self, job: dict) -> None:
        self.session = None
        if self.loaded is not None:
            self.loaded.release()
            self.loaded = None

    def job_ping(self, job: dict) -> dict:
        return {"pid": os.getpid()}


def _plain(stats: dict) -> dict:
    """Stats as plain values (the scheduler config is not sent back)."""
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str, list, tuple))}


def _setting(name: str) -> str:
    value = os.environ.get("MOVA_PARALLEL_" + name)
    if value is None:
        raise RuntimeError(f"MOVA_PARALLEL_{name} is not set: workers are started by mova_model.parallel.pool")
    return value


def _die_with_host() -> None:
    """On Linux this process is killed when the host process ends: a worker never outlives ComfyUI."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != int(_setting("PARENT")):  # the host ended before the line above
        os._exit(1)


def main() -> int:
    """Join the run described by the MOVA_PARALLEL_* environment and serve jobs until told to stop."""
    _die_with_host()
    logging.basicConfig(level=logging.INFO, format=f"[MOVA worker {_setting('RANK')}] %(message)s")
    rank, world = int(_setting("RANK")), int(_setting("WORLD"))
    cfg, ulysses, shard = (int(x) for x in _setting("PLAN").split(","))
    plan = ParallelPlan(cfg, ulysses, bool(shard))
    token, authkey = _setting("TOKEN"), bytes.fromhex(_setting("AUTHKEY"))
    host, port = _setting("STORE").rsplit(":", 1)
    device = torch.device(_setting("DEVICE"))
    timeout = timedelta(seconds=float(_setting("TIMEOUT")))
    store = dist.TCPStore(host, int(port), is_master=False, timeout=timeout)
    with Listener(("127.0.0.1", 0), authkey=authkey) as listener:
        store.set(f"{token}/address/{rank}", str(listener.address[1]))
        conn = listener.accept()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.PrefixStore(f"{token}/pg", store),
                            rank=rank, world_size=world, timeout=timeout)
    try:
        groups = make_groups(plan, device)
        channel.send(conn, "ready", rank=rank, device=str(device), pid=os.getpid())
        Worker(conn, groups).serve()
    finally:
        dist.destroy_process_group()
    return 0
