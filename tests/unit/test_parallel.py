"""MOVA on several processes (mova_model/parallel) equals the one-process run: real worker processes talking over
gloo on the CPU, the golden tiny release, rel. L2 <= 1e-5 in float32, for every mode with 2 processes and 3 where
the golden set's head counts allow (Ulysses needs the video heads to divide; CFG parallel on 3 needs dual CFG's
third pass). Both the MOVA Sampler's run (``sample``) and the native path's ``JointDenoiser`` are checked, and
what happens when a worker dies, fails, or is cancelled."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from comfyui_mova.mova_model.sampling import sampler
from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.sampling.denoiser import JointDenoiser
from comfyui_mova.mova_model.sampling.known_regions import KnownLatents
from comfyui_mova.mova_model.lora.load import LoraPatch, merge_lora_
from comfyui_mova.mova_model.parallel import remote
from comfyui_mova.mova_model.parallel.plan import ParallelPlan
from comfyui_mova.mova_model.parallel.pool import RunCancelled, WorkerError, WorkerPool
from comfyui_mova.mova_model.sampling.scheduler import make_schedule
from mova_testing import load_golden_towers, rel_l2
from parallel_fixtures import (HAS_YUNCHANG, JOB_TIMEOUT, NEEDS_YUNCHANG, PARITY, START_TIMEOUT, Pools, golden,
                               golden_configs, golden_models, inputs, options, ulysses_worlds)

ROOT, CASES, _ = golden()
ULYSSES = ulysses_worlds(ROOT)
DUAL = {"bridge_cfg_scale": 3.5}

# (test id, plan, option changes): ordered by plan, so that each pool starts once
RUNS = [
    ("cfg2", ParallelPlan(2, 1), {}),
    ("cfg2_dual", ParallelPlan(2, 1), DUAL),  # 3 passes on 2: a round with a repeated pass
    ("cfg2_cutoff", ParallelPlan(2, 1), {"cfg_cutoff": 0.5}),  # late steps have one pass
    ("cfg3_dual", ParallelPlan(3, 1), DUAL),
    ("cfg3_dual_fsdp", ParallelPlan(3, 1, True), DUAL),
    ("cfg2_fsdp", ParallelPlan(2, 1, True), {"cfg_cutoff": 0.5}),
    *[(f"ulysses{n}", ParallelPlan(1, n), {}) for n in ULYSSES],
    *[(f"ulysses{n}_dual_cache", ParallelPlan(1, n), {**DUAL, "cache_threshold": 0.05}) for n in ULYSSES],
    *[(f"ulysses{n}_fsdp", ParallelPlan(1, n, True), {}) for n in ULYSSES],
]


@pytest.fixture(scope="module")
def pools():
    p = Pools()
    yield p
    p.close()


@pytest.fixture(scope="module")
def towers():
    return load_golden_towers(ROOT)


def _skip_without_yunchang(plan: ParallelPlan):
    if plan.ulysses > 1 and not HAS_YUNCHANG:
        pytest.skip("yunchang is not installed (pip install yunchang==0.6.4, in the test extra)")


@pytest.mark.parametrize("name,plan,changes", RUNS, ids=[r[0] for r in RUNS])
def test_sample_equals_one_process(name, plan, changes, pools, towers):
    _skip_without_yunchang(plan)
    _, _, tensors = golden()
    opts = options(CASES, **changes)
    stats_ref = {}
    ref_video, ref_audio = sampler.sample(towers, *inputs(tensors), opts, stats=stats_ref)
    steps = []
    video, audio, stats = pools.runner(plan).sample(golden_models(ROOT), remote.run_inputs(*inputs(tensors), opts),
                                                    on_step=lambda step, total, preview: steps.append(step))
    assert rel_l2(video, ref_video) <= PARITY and rel_l2(audio, ref_audio) <= PARITY
    assert steps == list(range(1, opts.steps + 1))
    assert stats["skipped_steps"] == stats_ref["skipped_steps"]
    if plan.ulysses > 1:  # each process held its share of the video tokens
        share, whole = stats["video_tokens"]
        assert share == -(-whole // plan.ulysses) and whole == tensors["noise_video"][0, 0].numel() // 4


@pytest.mark.parametrize("plan", [ParallelPlan(2, 1), *[ParallelPlan(1, n) for n in ULYSSES]],
                         ids=lambda p: p.describe())
def test_native_denoiser_equals_one_process(plan, pools, towers):
    """The native path's JointDenoiser on the workers, walked by Euler over the official sigmas (what
    SamplerCustomAdvanced does), with dual CFG and kept video frames."""
    _skip_without_yunchang(plan)
    _, _, tensors = golden()
    opts = options(CASES, **DUAL)
    condition, pos, neg, video_noise, audio_noise = inputs(tensors)
    mask = torch.ones(1, 1, video_noise.shape[2], 1, 1)
    mask[:, :, 0] = 0  # the first latent frame is given
    known = KnownLatents(torch.randn_like(video_noise, generator=torch.Generator().manual_seed(1)), mask)
    sigmas = make_schedule(opts.steps, opts.shift, opts.scheduler, snap=True).step_sigmas.tolist()
    args = (condition, pos, neg, video_noise, audio_noise, opts, sigmas)
    local = JointDenoiser(towers, *args, dtype=torch.float32, device="cpu", known_video=known)
    far = pools.runner(plan).denoiser(golden_models(ROOT), JointDenoiser(towers, *args, dtype=torch.float32,
                                                                         device="cpu", known_video=known),
                                      remote.run_inputs(condition, pos, neg, video_noise, audio_noise, opts, known))
    state = {local: (video_noise, audio_noise), far: (video_noise, audio_noise)}
    for sigma, following in zip(sigmas, sigmas[1:]):
        outs = {}
        for denoiser in (local, far):
            v, a = state[denoiser]
            outs[denoiser] = out = denoiser(v, a, sigma)
            step = (following - sigma) / sigma
            state[denoiser] = (v + (v - out.video) * step, a + (a - out.audio) * step)
        for mine, theirs in ((outs[local].cond, outs[far].cond), (outs[local].uncond, outs[far].uncond)):
            assert all(rel_l2(t, r) <= PARITY for t, r in zip(theirs, mine))
    far.close()
    assert all(rel_l2(f, n) <= PARITY for f, n in zip(state[far], state[local]))


@pytest.mark.parametrize("plan", [ParallelPlan(2, 1), ParallelPlan(2, 1, True),
                                  *[ParallelPlan(1, n, True) for n in ULYSSES]], ids=lambda p: p.describe())
def test_one_expert_at_a_time(plan, pools, towers):
    """Workers whose device cannot hold both experts: plain experts move between host and device, sharded ones
    are loaded and sharded again at the switch; two runs in a row (the second starts from the low-noise one)."""
    _skip_without_yunchang(plan)
    _, _, tensors = golden()
    opts = options(CASES)
    ref = sampler.sample(towers, *inputs(tensors), opts)
    models = {**golden_models(ROOT), "experts_resident": "one"}
    models["key"] += "-one"
    for _ in range(2):
        video, audio, _ = pools.runner(plan).sample(models, remote.run_inputs(*inputs(tensors), opts))
        assert rel_l2(video, ref[0]) <= PARITY and rel_l2(audio, ref[1]) <= PARITY


@pytest.mark.parametrize("plan", [ParallelPlan(2, 1), *[ParallelPlan(1, n) for n in ULYSSES]],
                         ids=lambda p: p.describe())
def test_fp8_lora_block_swap_and_given_audio(plan, pools):
    """fp8 block weights, a LoRA merged by the workers, block swap in each worker, and the audio given whole and
    fed clean (the speech -> video mode): the same as one process doing the same."""
    _skip_without_yunchang(plan)
    _, _, tensors = golden()
    gen = torch.Generator().manual_seed(5)
    ckpt = ROOT / "checkpoint"
    reference = {name: loading.load_component(ckpt, kind, dtype=torch.float8_e4m3fn, component=name)
                 for name, kind in (("video_dit", "video_dit"), ("video_dit_2", "video_dit"),
                                    ("audio_dit", "audio_dit"), ("dual_tower_bridge", "dual_tower_bridge"))}
    for model in reference.values():  # as the workers do: what is not fp8 computes in float32
        for name, param in model.named_parameters():
            if param.dtype != torch.float8_e4m3fn and not name.endswith("scale_weight"):
                param.data = param.data.float()
    weight = reference["video_dit"].blocks[0].self_attn.q.weight
    patch = LoraPatch(down=torch.randn(4, weight.shape[1], generator=gen) * 0.1,
                      up=torch.randn(weight.shape[0], 4, generator=gen) * 0.1, scale=0.5)
    merge_lora_(reference["video_dit"], {"blocks.0.self_attn.q.weight": patch}, 0.8)
    towers = sampler.MovaTowers([reference["video_dit"], reference["video_dit_2"]], reference["audio_dit"],
                                reference["dual_tower_bridge"])
    opts = options(CASES, clean_given=True)
    condition, pos, neg, video_noise, audio_noise = inputs(tensors)
    given = KnownLatents(torch.randn_like(audio_noise, generator=gen), torch.zeros(1, 1, audio_noise.shape[-1]))
    ref = sampler.sample(towers, condition, pos, neg, video_noise, audio_noise, opts, dtype=torch.float32,
                         known_audio=given)
    models = golden_models(ROOT, fp8=True)
    models["experts"][0]["loras"] = [{"patches": {"blocks.0.self_attn.q.weight": {"down": patch.down, "up": patch.up,
                                                                                  "scale": patch.scale}},
                                      "strength": 0.8}]
    models = remote.models_description(models["experts"], models["audio_dit"], models["bridge"], torch.float32,
                                       swap_blocks=1)
    video, audio, _ = pools.runner(plan).sample(models, remote.run_inputs(condition, pos, neg, video_noise,
                                                                          audio_noise, opts, known_audio=given))
    assert rel_l2(video, ref[0]) <= PARITY and rel_l2(audio, ref[1]) <= PARITY
    assert torch.equal(audio, given.latents)  # the given sound comes back bit for bit


def test_cancel_stops_every_worker_and_the_pool_goes_on(pools):
    _, _, tensors = golden()
    plan = ParallelPlan(2, 1)
    seen = []
    runner = pools.runner(plan, interrupted=lambda: len(seen) >= 2)
    opts = options(CASES, steps=40)
    with pytest.raises(RunCancelled):
        runner.sample(golden_models(ROOT), remote.run_inputs(*inputs(tensors), opts),
                      on_step=lambda step, total, preview: seen.append(step))
    assert 2 <= len(seen) < opts.steps  # stopped between steps, all workers together
    pool = pools.get(plan)
    assert pool.alive
    out = pools.runner(plan).sample(golden_models(ROOT), remote.run_inputs(*inputs(tensors), options(CASES)))
    assert torch.isfinite(out[0]).all()


def test_a_failure_on_every_worker_is_reported_and_the_pool_goes_on(pools):
    _, _, tensors = golden()
    plan = ParallelPlan(2, 1)
    models = golden_models(ROOT)
    models["experts"][1] = remote.model_spec(ROOT / "checkpoint" / "no_such_folder")
    models = remote.models_description(models["experts"], models["audio_dit"], models["bridge"], torch.float32)
    with pytest.raises(WorkerError, match="no_such_folder"):
        pools.runner(plan).sample(models, remote.run_inputs(*inputs(tensors), options(CASES)))
    assert pools.get(plan).alive


def test_a_killed_worker_gives_a_clear_error_and_stops_the_others():
    """Worker 1 is killed (SIGKILL, as the out-of-memory killer does) in the middle of a run: the host gets a
    WorkerError naming it, every other worker is stopped, and a new pool runs afterwards."""
    _, _, tensors = golden()
    plan = ParallelPlan(2, 1)
    pool = WorkerPool(plan, ["cpu"] * plan.world, timeout=JOB_TIMEOUT, start_timeout=START_TIMEOUT)
    pool.start()
    procs = list(pool.procs)
    try:
        def on_step(step, total, preview):
            if step == 2:
                os.kill(pool.pids[1], signal.SIGKILL)

        started = time.monotonic()
        with pytest.raises(WorkerError) as failure:
            remote.ParallelRunner(pool, timeout=JOB_TIMEOUT).sample(
                golden_models(ROOT), remote.run_inputs(*inputs(tensors), options(CASES, steps=400)), on_step=on_step)
        message = str(failure.value)
        assert "worker 1" in message and "SIGKILL" in message and "next run starts new workers" in message
        assert time.monotonic() - started < 60  # noticed at once, not after a collective's timeout
        assert not pool.alive and all(p.poll() is not None for p in procs)
    finally:
        pool.stop()
    again = WorkerPool(plan, ["cpu"] * plan.world, timeout=JOB_TIMEOUT, start_timeout=START_TIMEOUT)
    again.start()
    try:
        video, _, _ = remote.ParallelRunner(again, timeout=JOB_TIMEOUT).sample(
            golden_models(ROOT), remote.run_inputs(*inputs(tensors), options(CASES)))
        assert torch.isfinite(video).all()
    finally:
        again.stop()


@NEEDS_YUNCHANG
def test_uneven_token_count_is_padded(pools, towers):
    """A video whose token count the Ulysses degree does not divide (another size): padded, the same result."""
    plan = next((ParallelPlan(1, n) for n in ULYSSES), None)
    if plan is None:
        pytest.skip("the golden video expert's heads allow no Ulysses degree of 2 or 3")
    _, _, tensors = golden()
    condition, pos, neg, video_noise, audio_noise = inputs(tensors)
    b, c, t, h, w = video_noise.shape
    pt, ph, pw = golden_configs(ROOT)["video_dit"]["patch_size"]
    grown = next((t + i * pt, h + j * ph, w + k * pw) for i in range(3) for j in range(3) for k in range(3)
                 if ((t + i * pt) // pt) * ((h + j * ph) // ph) * ((w + k * pw) // pw) % plan.ulysses)
    gen = torch.Generator().manual_seed(2)
    condition = torch.randn(b, condition.shape[1], *grown, generator=gen)
    video_noise = torch.randn(b, c, *grown, generator=gen)
    opts = options(CASES, steps=3)
    ref = sampler.sample(towers, condition, pos, neg, video_noise, audio_noise, opts)
    video, audio, stats = pools.runner(plan).sample(
        golden_models(ROOT), remote.run_inputs(condition, pos, neg, video_noise, audio_noise, opts))
    assert stats["video_tokens"][1] % plan.ulysses != 0
    assert rel_l2(video, ref[0]) <= PARITY and rel_l2(audio, ref[1]) <= PARITY
