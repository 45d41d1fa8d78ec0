"""MOVA Sampler's and MOVA Guider's runs on the workers of MOVA Parallel, inside ComfyUI.

One pool of workers at a time. It is reused by every run with the same devices and plan (the workers keep the
towers loaded while the loaders' files, fp8 setting and LoRAs stay the same) and stopped when a run asks for
other devices or another plan, when MOVA Parallel's keep_loaded is off (after each run), when a worker fails,
and when ComfyUI unloads its models (the pool is registered with ComfyUI's memory manager as a model whose
size is the weights its workers hold on ComfyUI's own device; unloading that model stops them).
"""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.model_patcher
import torch
from comfy.patcher_extension import CallbacksMP

from ...mova_model.sampling.denoiser import JointDenoiser
from ...mova_model.parallel.pool import RunCancelled, WorkerError, WorkerPool
from ...mova_model.parallel.remote import ParallelRunner, run_inputs
from ..handles import LoadedPart
from .setup import ParallelSetup, check_run, models_for, worker_bytes

log = logging.getLogger(__name__)


class _Active:
    pool: WorkerPool | None = None
    key: tuple | None = None
    tracker = None


def stop_workers(reason: str, keep_tracker: bool = False) -> None:
    """Stop the pool (its devices' memory is freed); the next parallel run starts a new one. ``keep_tracker``: while
    ComfyUI unloads the tracker itself, keep the reference to it (see ``_track``)."""
    pool, _Active.pool, _Active.key = _Active.pool, None, None
    if not keep_tracker:
        _Active.tracker = None
    if pool is not None and pool.procs:
        log.info("MOVA Parallel: stopping the workers (%s)", reason)
        pool.stop()


class WorkersInMemory(torch.nn.Module):
    """Stands for the workers' weights in ComfyUI's memory manager (it holds no tensor itself)."""


def _track(pool: WorkerPool, setup: ParallelSetup, size: int) -> None:
    """Register ``pool`` with ComfyUI's memory manager: unloading it (Unload Models, or room needed for other
    models) stops the workers."""
    device = mm.get_torch_device()
    shares = str(device) in setup.devices or (device.type == "cuda" and f"cuda:{device.index or 0}" in setup.devices)
    patcher = comfy.model_patcher.ModelPatcher(WorkersInMemory(), load_device=device,
                                               offload_device=mm.unet_offload_device(), size=size if shares else 0)

    def unloaded(_patcher, unpatch_all=True):
        # ComfyUI unloads with unpatch_all (Unload Models, room for other models); re-requesting a loaded model
        # detaches it without, and loads it again at once. The tracker stays referenced until the next pool's
        # replaces it: ComfyUI (v0.33) holds its models by weak reference and is still walking its list of loaded
        # models here; the patcher freed now would leave a dead entry there that kills ComfyUI's prompt worker.
        if unpatch_all and _Active.pool is pool:
            stop_workers("ComfyUI unloaded the models", keep_tracker=True)

    patcher.add_callback(CallbacksMP.ON_DETACH, unloaded)
    _Active.tracker = patcher
    mm.load_models_gpu([patcher])


def pool_for(setup: ParallelSetup, size: int) -> WorkerPool:
    """The running pool for ``setup``'s devices and plan, or a new one (the old one stopped first)."""
    key = (setup.devices, setup.plan)
    if _Active.pool is not None and (_Active.key != key or not _Active.pool.alive):
        stop_workers("other devices or another plan" if _Active.key != key else "a worker had stopped")
    if _Active.pool is None:
        pool = WorkerPool(setup.plan, list(setup.devices))
        _Active.pool, _Active.key = pool, key
        _track(pool, setup, size)
        log.info("MOVA Parallel: starting %s", setup.describe())
        try:
            pool.start()
        except BaseException:
            stop_workers("the workers did not start")
            raise
    else:
        mm.load_models_gpu([_Active.tracker])  # in use: the last model ComfyUI would unload
    return _Active.pool


class Interrupts:
    """Cancel while the workers run: ComfyUI's flag, or an exception from a progress callback (kept to be
    raised once every worker has stopped)."""

    def __init__(self):
        self.error: BaseException | None = None

    def interrupted(self) -> bool:
        return self.error is not None or mm.processing_interrupted()

    def call(self, fn, *args) -> None:
        if self.error is None:
            try:
                fn(*args)
            except BaseException as exc:  # Cancel pressed (InterruptProcessingException) or a preview failure
                self.error = exc

    def reraise(self):
        if self.error is not None:
            raise self.error
        mm.throw_exception_if_processing_interrupted()
        raise mm.InterruptProcessingException()


def _runner(setup: ParallelSetup, high, low, tower, watch: Interrupts) -> tuple[ParallelRunner, dict]:
    models = models_for(setup, high, low, tower)
    return ParallelRunner(pool_for(setup, worker_bytes(setup, high, low, tower)), interrupted=watch.interrupted), models


def _done(setup: ParallelSetup) -> None:
    if not setup.keep_loaded:
        stop_workers("keep_loaded is off")


def parallel_sample(setup: ParallelSetup, high: LoadedPart, low: LoadedPart, tower: LoadedPart):
    """A function with ``mova_model.sampling.sampler.sample``'s signature that runs the sampling on the workers (for
    ``nodes.sampling.run.sample_joint``); ``callback`` gets the video's middle latent frame as the latents."""

    def run(towers, condition, context_pos, context_neg, video_noise, audio_noise, options, callback=None,
            before_expert=None, dtype=None, device=None, stats=None, known_video=None, known_audio=None):
        check_run(setup, high, options, context_neg is not None)
        watch = Interrupts()
        runner, models = _runner(setup, high, low, tower, watch)

        def on_step(step, total, preview):
            if callback is not None:
                watch.call(callback, step, total, preview, None)

        try:
            video, audio, got = runner.sample(models, run_inputs(condition, context_pos, context_neg, video_noise,
                                                                 audio_noise, options, known_video, known_audio), on_step)
        except RunCancelled:
            watch.reraise()
        finally:
            _done(setup)
        if watch.error is not None:  # the run ended before Cancel reached the workers
            raise watch.error
        if stats is not None:
            stats.update(got, parallel=setup.describe())
        return video, audio

    return run


def parallel_denoiser(setup: ParallelSetup, high: LoadedPart, low: LoadedPart, tower: LoadedPart):
    """A function with ``JointDenoiser``'s signature whose denoiser runs on the workers (for MOVA Guider): it
    builds a local JointDenoiser for the checks and the kept regions, then opens the same one on the workers.
    Its result has ``close()`` (call it when the sampling ends) and ``attention`` / ``speed``."""

    def make(towers, condition, context_pos, context_neg, video_noise, audio_noise, options, sigmas, *, dtype,
             device, known_video=None, known_audio=None, before_expert=None):
        local = JointDenoiser(towers, condition, context_pos, context_neg, video_noise, audio_noise, options, sigmas,
                              dtype=dtype, device=device, known_video=known_video, known_audio=known_audio)
        check_run(setup, high, local.options, context_neg is not None)
        watch = Interrupts()
        runner, models = _runner(setup, high, low, tower, watch)
        return runner.denoiser(models, local, run_inputs(condition, context_pos, context_neg, video_noise,
                                                         audio_noise, options, known_video, known_audio),
                               on_close=lambda: _done(setup))

    return make


__all__ = ["WorkerError", "parallel_denoiser", "parallel_sample", "stop_workers"]
