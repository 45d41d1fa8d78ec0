"""Guidance beyond the official pipeline: dual (bridge) CFG, per-modality CFG and shift, CFG cut-off,
and step caching — each checked against real joint forwards of the tiny golden model."""

import pytest
import torch

from comfyui_mova.mova_model.sampling import joint, sampler, scheduler
from comfyui_mova.mova_model.sampling.guidance import Guidance
from mova_testing import GOLDEN_TOL, golden_scheduler, load_golden_towers, rel_l2


@pytest.fixture(scope="module")
def towers(golden_dir):
    return load_golden_towers(golden_dir)

def _one_step(towers, g, fps, **options):
    opts = sampler.SamplingOptions(steps=1, fps=fps, **options)
    return sampler.sample(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"],
                          g["noise_audio"], opts)


def _passes(towers, g, fps, t_video=1000.0, t_audio=1000.0):
    """The three real joint passes of the first step: (B,T), (B,∅T), (∅B,∅T)."""
    x = torch.cat([g["noise_video"], g["condition"]], dim=1)
    run = lambda ctx, s: joint.joint_forward(towers.video_experts[0], towers.audio_dit, towers.bridge, x,  # noqa: E731
                                             g["noise_audio"], ctx, torch.tensor([t_video]),
                                             torch.tensor([t_audio]), fps, bridge_scale=s)
    return run(g["context_pos"], 1.0), run(g["context_neg"], 1.0), run(g["context_neg"], 0.0)


def test_dual_cfg_combines_three_passes_as_specified(towers, golden_tensors, golden_cases):
    g, fps = golden_tensors, golden_cases["fps"]
    s_t, s_b = 5.0, 3.5
    cond, text_uncond, both_uncond = _passes(towers, g, fps)
    video, audio = _one_step(towers, g, fps, cfg_scale=s_t, bridge_cfg_scale=s_b)
    for key, out, noise in (("video", video, g["noise_video"]), ("audio", audio, g["noise_audio"])):
        c, u, n = getattr(cond, key), getattr(text_uncond, key), getattr(both_uncond, key)
        expected_v = n + s_b * (u - n) + s_t * (c - u)
        assert rel_l2(out, noise - expected_v) < 1e-6  # one Euler step from sigma 1 to 0
    assert Guidance(5.0, 5.0, 3.5).passes(True) == 3 and Guidance(5.0, 5.0, 1.0).passes(True) == 2


def test_bridge_scale_one_reproduces_the_golden_sample(towers, golden_tensors, golden_cases):
    g = golden_tensors
    sched = golden_scheduler(golden_cases)
    opts = sampler.SamplingOptions(steps=golden_cases["sample_steps"], cfg_scale=5.0, bridge_cfg_scale=1.0,
                                   fps=golden_cases["fps"], boundary_ratio=golden_cases["boundary_ratio"],
                                   shift=sched.shift, scheduler=sched)
    video, audio = sampler.sample(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"],
                                  g["noise_audio"], opts)
    assert rel_l2(video, g["sample_cfg5_video"]) < GOLDEN_TOL
    assert rel_l2(audio, g["sample_cfg5_audio"]) < GOLDEN_TOL


def test_bridge_off_really_disconnects_the_towers(towers, golden_tensors, golden_cases):
    g, fps = golden_tensors, golden_cases["fps"]
    _, text_uncond, both_uncond = _passes(towers, g, fps)
    assert rel_l2(both_uncond.video, text_uncond.video) > 1e-3  # the bridge matters
    alone = towers.video_experts[0](torch.cat([g["noise_video"], g["condition"]], dim=1), torch.tensor([1000.0]),
                                    g["context_neg"])
    assert rel_l2(both_uncond.video, alone) < 1e-6  # with scale 0 the video tower runs as if alone


def test_separate_audio_cfg_scale(towers, golden_tensors, golden_cases):
    g, fps = golden_tensors, golden_cases["fps"]
    cond, uncond, _ = _passes(towers, g, fps)
    video, audio = _one_step(towers, g, fps, cfg_scale=5.0, audio_cfg_scale=2.0)
    assert rel_l2(video, g["noise_video"] - (uncond.video + 5.0 * (cond.video - uncond.video))) < 1e-6
    assert rel_l2(audio, g["noise_audio"] - (uncond.audio + 2.0 * (cond.audio - uncond.audio))) < 1e-6


def test_separate_audio_shift_uses_its_own_schedule(towers, golden_tensors, golden_cases):
    g, fps = golden_tensors, golden_cases["fps"]
    sched_v = scheduler.make_schedule(4, 5.0, sampler.SamplingOptions().scheduler)
    sched_a = scheduler.make_schedule(4, 2.0, sampler.SamplingOptions().scheduler)
    assert not torch.equal(sched_v.timesteps, sched_a.timesteps)
    steps_seen = []
    opts = sampler.SamplingOptions(steps=4, cfg_scale=1.0, shift=5.0, audio_shift=2.0, fps=fps)
    sampler.sample(towers, g["condition"], g["context_pos"], None, g["noise_video"], g["noise_audio"], opts,
                   callback=lambda i, n, v, a: steps_seen.append(a.clone()))
    # Second step by hand: the audio tower is fed the audio schedule's timestep.
    x = torch.cat([g["noise_video"], g["condition"]], dim=1)
    out = joint.joint_forward(towers.video_experts[0], towers.audio_dit, towers.bridge, x, g["noise_audio"],
                              g["context_pos"], sched_v.timesteps[:1], sched_a.timesteps[:1], fps)
    first_audio = sched_a.euler_step(g["noise_audio"], out.audio, 0)
    assert rel_l2(steps_seen[0], first_audio) < 1e-6


def test_cfg_cutoff(towers, golden_tensors, golden_cases):
    g = golden_tensors
    args = (g["condition"], g["context_pos"], g["context_neg"], g["noise_video"], g["noise_audio"])
    run = lambda **kw: sampler.sample(towers, *args, sampler.SamplingOptions(steps=4, fps=golden_cases["fps"], **kw))  # noqa: E731
    plain = run(cfg_scale=1.0)
    assert torch.equal(run(cfg_scale=5.0, cfg_cutoff=0.0)[0], plain[0])
    full, half = run(cfg_scale=5.0), run(cfg_scale=5.0, cfg_cutoff=0.5)
    assert rel_l2(half[0], full[0]) > 1e-4 and rel_l2(half[0], plain[0]) > 1e-4
    with pytest.raises(ValueError, match=r"cfg_cutoff 1.5 must lie in 0..1"):
        run(cfg_scale=5.0, cfg_cutoff=1.5)


def test_step_cache_off_is_exact_and_on_skips_with_small_deviation(towers, golden_tensors, golden_cases):
    g = golden_tensors
    args = (g["condition"], g["context_pos"], g["context_neg"], g["noise_video"], g["noise_audio"])
    steps = 20
    base = dict(steps=steps, cfg_scale=5.0, fps=golden_cases["fps"], boundary_ratio=golden_cases["boundary_ratio"])
    ref_stats, stats = {}, {}
    ref = sampler.sample(towers, *args, sampler.SamplingOptions(**base), stats=ref_stats)
    assert (ref_stats["computed_steps"], ref_stats["skipped_steps"]) == (steps, 0)
    off = sampler.sample(towers, *args, sampler.SamplingOptions(**base, cache_threshold=0.0))
    assert torch.equal(off[0], ref[0])
    cached = sampler.sample(towers, *args, sampler.SamplingOptions(**base, cache_threshold=0.3), stats=stats)
    assert stats["skipped_steps"] > 0 and stats["computed_steps"] + stats["skipped_steps"] == steps
    print(f"step cache 0.3: skipped {stats['skipped_steps']}/{steps}; deviation video "
          f"{rel_l2(cached[0], ref[0]):.4f}, audio {rel_l2(cached[1], ref[1]):.4f}")
    assert rel_l2(cached[0], ref[0]) < 0.15 and rel_l2(cached[1], ref[1]) < 0.15
