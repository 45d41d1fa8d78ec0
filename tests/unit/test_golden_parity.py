"""Parity with the official MOVA implementation on the golden set (float32, rel. L2 < 1e-4).

Every size comes from cases.json and the checkpoint configs; the folder from $MOVA_GOLDEN_DIR.
"""

import pytest
import torch

from comfyui_mova.mova_model.sampling import audio, joint, sampler, scheduler
from comfyui_mova.mova_model import configs
from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.networks import rope
from mova_testing import GOLDEN_TOL, rel_l2


@pytest.fixture(scope="module")
def towers(golden_dir):
    ckpt = golden_dir / "checkpoint"
    load = lambda kind, folder: loading.load_component(ckpt, kind, dtype=torch.float32, component=folder)  # noqa: E731
    return {
        "high": load("video_dit", "video_dit"),
        "low": load("video_dit", "video_dit_2"),
        "audio": load("audio_dit", "audio_dit"),
        "bridge": load("dual_tower_bridge", "dual_tower_bridge"),
    }


@pytest.fixture(scope="module")
def sched_config(golden_cases):
    return configs.config_from_dict(configs.SchedulerConfig, golden_cases["scheduler"])


STEP_CASES = {  # key: (expert, video timestep, audio timestep, fps or None for cases.json's)
    "step_high": ("high", 850, 850, None),
    "step_low": ("low", 850, 850, None),
    "step_split_t": ("high", 930, 610, None),
    "step_fps25": ("low", 400, 400, 25.0),
}


@pytest.mark.parametrize("case", sorted(STEP_CASES))
def test_golden_joint_forward(case, towers, golden_tensors, golden_cases):
    expert, t_video, t_audio, fps = STEP_CASES[case]
    g = golden_tensors
    out = joint.joint_forward(
        towers[expert], towers["audio"], towers["bridge"],
        torch.cat([g["noise_video"], g["condition"]], dim=1), g["noise_audio"], g["context_pos"],
        torch.tensor([float(t_video)]), torch.tensor([float(t_audio)]), fps or golden_cases["fps"],
    )
    assert rel_l2(out.video, g[f"{case}_video"]) < GOLDEN_TOL
    assert rel_l2(out.audio, g[f"{case}_audio"]) < GOLDEN_TOL


@pytest.mark.parametrize("steps", [10, 20, 25, 50])
def test_golden_schedule(steps, golden_tensors, sched_config):
    sched = scheduler.make_schedule(steps, sched_config.shift, sched_config)
    assert rel_l2(sched.timesteps, golden_tensors[f"schedule_{steps}_timesteps"]) < GOLDEN_TOL
    assert rel_l2(sched.step_sigmas[:-1], golden_tensors[f"schedule_{steps}_sigmas"]) < GOLDEN_TOL
    assert sched.step_sigmas[-1] == 0


@pytest.mark.parametrize("fps", [24, 25])
def test_golden_bridge_rope(fps, towers, golden_tensors, golden_cases):
    bridge = towers["bridge"]
    t = (golden_cases["num_frames"] - 1) // 4 + 1
    grid = (t, golden_cases["height"] // 16, golden_cases["width"] // 16)
    (v_cos, v_sin), (a_cos, a_sin) = bridge.aligned_rope(grid, golden_cases["audio_latent_length"], float(fps))
    for name, ours in (("video_cos", v_cos), ("video_sin", v_sin), ("audio_cos", a_cos), ("audio_sin", a_sin)):
        assert rel_l2(ours[None], golden_tensors[f"rope_fps{fps}_{name}"]) < GOLDEN_TOL, name


def test_golden_tower_rope_splits_head_dim():
    table = rope.tower_rope_video(128, (2, 3, 4))
    assert table.shape == (24, 64) and table.dtype == torch.complex64  # 44/42/42 split -> 22 + 21 + 21 pairs
    assert torch.allclose(table.abs(), torch.ones(24, 64))


@pytest.mark.parametrize("cfg", [5, 1])
def test_golden_sample(cfg, towers, golden_tensors, golden_cases, sched_config):
    g = golden_tensors
    used = []
    opts = sampler.SamplingOptions(
        steps=golden_cases["sample_steps"], cfg_scale=float(cfg), shift=sched_config.shift,
        boundary_ratio=golden_cases["boundary_ratio"], fps=golden_cases["fps"], scheduler=sched_config,
    )
    mova = sampler.MovaTowers([towers["high"], towers["low"]], towers["audio"], towers["bridge"])
    video, aud = sampler.sample(
        mova, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"], g["noise_audio"], opts,
        callback=lambda step, total, v, a: used.append(step),
    )
    assert rel_l2(video, g[f"sample_cfg{cfg}_video"]) < GOLDEN_TOL
    assert rel_l2(aud, g[f"sample_cfg{cfg}_audio"]) < GOLDEN_TOL
    assert used == list(range(1, golden_cases["sample_steps"] + 1))


def test_golden_expert_per_step(golden_cases, sched_config):
    sched = scheduler.make_schedule(golden_cases["sample_steps"], sched_config.shift, sched_config)
    chosen = [sampler.expert_index(t, golden_cases["boundary_ratio"], sched_config.num_train_timesteps)
              for t in sched.timesteps.tolist()]
    assert chosen == golden_cases["experts_used_per_step"]["cfg5"]


def test_golden_audio_length(golden_cases, golden_dir):
    dac = loading.load_component(golden_dir / "checkpoint", "audio_vae", dtype=torch.float32)
    frames, fps = golden_cases["num_frames"], golden_cases["fps"]
    from comfyui_mova.mova_model.sampling import sizes
    assert sizes.audio_num_samples(frames, fps, dac.config.sample_rate) == golden_cases["audio_num_samples"]
    assert sizes.audio_latent_length(frames, fps, dac.config) == golden_cases["audio_latent_length"]
    latent = torch.randn(1, dac.config.latent_dim, golden_cases["audio_latent_length"])
    wave = audio.decode_audio(dac, latent, frames, fps)
    assert wave.shape == (1, 1, golden_cases["audio_num_samples"])
    assert wave.abs().max() <= 1


def test_golden_dac_through_loader(golden_dir, golden_tensors):
    """The release's fused DAC and the weight-norm file both load through the real loader."""
    fused = loading.load_component(golden_dir / "checkpoint", "audio_vae", dtype=torch.float32)
    assert rel_l2(fused.decode(golden_tensors["dac_latent"]), golden_tensors["dac_decoded"]) < GOLDEN_TOL
    config = fused.config
    wn = loading.load_component(golden_dir / "dac_weightnorm.safetensors", "audio_vae", dtype=torch.float32,
                                config=config)
    out = wn.decode(golden_tensors["dac_latent"])
    assert rel_l2(out, golden_tensors["dac_weightnorm_decoded"]) < GOLDEN_TOL
