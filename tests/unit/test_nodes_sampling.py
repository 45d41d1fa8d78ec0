"""MOVA Sampler's logic on the golden tiny models: same result as the core sampler, hooks, cancel, wiring errors."""

import dataclasses
import json

import pytest
import torch

from comfyui_mova.mova_model.configs import DACConfig, config_from_dict
from comfyui_mova.mova_model.sampling.latents import denormalise_video_latents
from comfyui_mova.mova_model.sampling.sampler import MovaTowers, SamplingOptions, make_noise, sample
from comfyui_mova.nodes.conditioning.condition import empty_joint_latent
from comfyui_mova.nodes.handles import LATENT_AUDIO_KEY, MovaConditioning
from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_video_expert
from comfyui_mova.nodes.sampling.run import activation_bytes, sample_joint
from mova_testing import golden_scheduler

STEPS = 6


@pytest.fixture(scope="module")
def parts(golden_dir):
    ckpt = golden_dir / "checkpoint"
    high = load_video_expert(ckpt / "video_dit")
    low = load_video_expert(ckpt / "video_dit_2")
    tower = load_audio_tower(ckpt / "audio_dit", ckpt / "dual_tower_bridge")
    dac = config_from_dict(DACConfig, json.loads((ckpt / "audio_vae" / "config.json").read_text()))
    return high, low, tower, dac


@pytest.fixture(scope="module")
def inputs(golden_cases, golden_tensors, parts):
    c = golden_cases
    cond = MovaConditioning(golden_tensors["context_pos"], golden_tensors["context_neg"], golden_tensors["condition"],
                            c["width"], c["height"], c["num_frames"], c["fps"])
    latent = empty_joint_latent(c["width"], c["height"], c["num_frames"], c["fps"], parts[3])
    return cond, latent


def _run(parts, inputs, **kwargs):
    high, low, tower, _ = parts
    cond, latent = inputs
    args = dict(seed=7, steps=STEPS, cfg=5.0, shift=5.0, boundary_ratio=0.9) | kwargs
    return sample_joint(high, low, tower, cond, latent, **args)


def test_matches_core_sampler(parts, inputs, golden_cases):
    high, low, tower, _ = parts
    cond, latent = inputs
    video_latent, audio_latent = _run(parts, inputs)
    noise = make_noise(latent["samples"].shape, latent[LATENT_AUDIO_KEY].samples.shape, 7)
    towers = MovaTowers([high.model, low.model], tower.model.audio_dit, tower.model.bridge)
    ref_v, ref_a = sample(towers, cond.condition, cond.context_pos, cond.context_neg, *noise,
                          SamplingOptions(steps=STEPS, cfg_scale=5.0, shift=5.0, boundary_ratio=0.9, fps=cond.fps,
                                          scheduler=golden_scheduler(golden_cases)))
    assert set(video_latent) == {"samples"}
    assert video_latent["samples"].dtype == torch.float32 and video_latent["samples"].device.type == "cpu"
    assert torch.allclose(video_latent["samples"], denormalise_video_latents(ref_v))
    assert torch.allclose(audio_latent.samples, ref_a)
    source = latent[LATENT_AUDIO_KEY]
    assert (audio_latent.frames, audio_latent.fps, audio_latent.sample_rate) == \
        (source.frames, source.fps, source.sample_rate)


def test_seed_changes_result(parts, inputs):
    a, _ = _run(parts, inputs, seed=1, steps=2)
    b, _ = _run(parts, inputs, seed=2, steps=2)
    c, _ = _run(parts, inputs, seed=1, steps=2)
    assert not torch.equal(a["samples"], b["samples"]) and torch.equal(a["samples"], c["samples"])


def test_hooks_expert_order_and_progress(parts, inputs):
    loaded, steps = [], []
    _run(parts, inputs, before_expert=loaded.append, on_step=lambda s, t, v, a: steps.append((s, t, v.shape)))
    assert loaded == [0, 1]  # high-noise expert first, each loaded once
    assert [s for s, _, _ in steps] == list(range(1, STEPS + 1))
    assert all(t == STEPS for _, t, _ in steps)
    assert steps[0][2] == inputs[1]["samples"].shape


def test_cancel_from_step_callback(parts, inputs):
    seen = []

    def on_step(step, total, video, audio):
        seen.append(step)
        if step == 2:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        _run(parts, inputs, on_step=on_step)
    assert seen == [1, 2]


def test_cfg_one_ignores_negative(parts, inputs):
    cond, latent = inputs
    no_negative = (dataclasses.replace(cond, context_neg=None), latent)
    a, _ = _run(parts, inputs, cfg=1.0, steps=2)
    b, _ = _run(parts, no_negative, cfg=1.0, steps=2)
    assert torch.equal(a["samples"], b["samples"])


def test_swapped_experts(parts, inputs):
    high, low, tower, _ = parts
    cond, latent = inputs
    with pytest.raises(ValueError, match="high_noise_expert got the low-noise expert.*swap"):
        sample_joint(low, high, tower, cond, latent, 0, 2, 5.0, 5.0, 0.9)


def test_latent_from_another_node(parts, inputs):
    high, low, tower, _ = parts
    cond, latent = inputs
    with pytest.raises(ValueError, match="no audio part.*MOVA Conditioning"):
        sample_joint(high, low, tower, cond, {"samples": latent["samples"]}, 0, 2, 5.0, 5.0, 0.9)


def test_conditioning_for_another_size(parts, inputs, golden_cases):
    high, low, tower, dac = parts
    cond, _ = inputs
    other = empty_joint_latent(golden_cases["width"] * 2, golden_cases["height"], golden_cases["num_frames"],
                               golden_cases["fps"], dac)
    with pytest.raises(ValueError, match="same MOVA Conditioning node"):
        sample_joint(high, low, tower, cond, other, 0, 2, 5.0, 5.0, 0.9)


def test_latent_for_another_fps(parts, inputs, golden_cases):
    high, low, tower, dac = parts
    cond, _ = inputs
    other = empty_joint_latent(golden_cases["width"], golden_cases["height"], golden_cases["num_frames"],
                               golden_cases["fps"] + 1, dac)
    with pytest.raises(ValueError, match="latent is for .* fps but the conditioning"):
        sample_joint(high, low, tower, cond, other, 0, 2, 5.0, 5.0, 0.9)


def test_audio_vae_with_other_channels(parts, inputs, golden_cases):
    high, low, tower, dac = parts
    cond, _ = inputs
    wide = dataclasses.replace(dac, latent_dim=dac.latent_dim * 2)
    latent = empty_joint_latent(golden_cases["width"], golden_cases["height"], golden_cases["num_frames"],
                                golden_cases["fps"], wide)
    channels = tower.model.audio_dit.config.in_dim
    with pytest.raises(ValueError, match=f"audio VAE makes {2 * dac.latent_dim}-channel latents but the audio DiT "
                       f"takes {channels}"):
        sample_joint(high, low, tower, cond, latent, 0, 2, 5.0, 5.0, 0.9)


def test_audio_vae_with_other_rate(parts, inputs, golden_cases):
    high, low, tower, dac = parts
    cond, _ = inputs
    faster = dataclasses.replace(dac, sample_rate=dac.sample_rate * 2)
    latent = empty_joint_latent(golden_cases["width"], golden_cases["height"], golden_cases["num_frames"],
                                golden_cases["fps"], faster)
    rate, trained = 2 * dac.sample_rate / dac.hop_length, tower.model.bridge.config.audio_fps
    with pytest.raises(ValueError, match=f"audio VAE runs at {rate:g} latents/s.*trained at {trained:g}"):
        sample_joint(high, low, tower, cond, latent, 0, 2, 5.0, 5.0, 0.9)


def test_prompt_from_another_text_encoder(parts, inputs):
    high, low, tower, _ = parts
    cond, latent = inputs
    clip_l = dataclasses.replace(cond, context_pos=torch.zeros(1, 77, 768), context_neg=torch.zeros(1, 77, 768))
    with pytest.raises(ValueError, match="768 features per token, MOVA needs 4096.*type wan"):
        sample_joint(high, low, tower, clip_l, latent, 0, 2, 5.0, 5.0, 0.9)


def test_cfg_needs_negative(parts, inputs):
    high, low, tower, _ = parts
    cond, latent = inputs
    with pytest.raises(ValueError, match="needs a negative prompt"):
        sample_joint(high, low, tower, dataclasses.replace(cond, context_neg=None), latent, 0, 2, 5.0, 5.0, 0.9)


def test_activation_estimate_real_sizes():
    from comfyui_mova.mova_model.configs import AUDIO_DIT_1B, VIDEO_DIT_A14B
    # 360p, 193 frames: 49 x 22 x 40 = 43120 video tokens, 403 audio tokens, bf16
    estimate = activation_bytes((1, 16, 49, 44, 80), (1, 128, 403), VIDEO_DIT_A14B, AUDIO_DIT_1B, torch.bfloat16)
    expected = 2 * (43120 * (13824 + 6 * 5120) + 403 * (8960 + 6 * 1536))
    assert estimate == expected
    assert 3e9 < estimate < 5e9


def test_experts_stay_together_only_when_they_fit():
    """Both experts, the tower and the activations against the device budget: one byte over and the sampler goes
    back to one expert at a time."""
    from comfyui_mova.nodes.sampling.run import experts_fit_together
    experts, tower, activations = (28 << 30, 28 << 30), 3 << 30, 5 << 30
    need = sum(experts) + tower + activations
    assert experts_fit_together(experts, tower, activations, need)
    assert not experts_fit_together(experts, tower, activations, need - 1)
