"""MOVA Sampler Options without ComfyUI: widget values to the core sampler's options (defaults = official),
the sampler's result with each option equal to the core sampler's, the negative prompt rule, the cache report."""

import dataclasses
import json

import pytest
import torch

from comfyui_mova.mova_model.configs import DACConfig, config_from_dict
from comfyui_mova.mova_model.sampling.latents import denormalise_video_latents
from comfyui_mova.mova_model.weights.release import read_release_settings, release_root
from comfyui_mova.mova_model.sampling.sampler import MovaTowers, SamplingOptions, make_noise, sample
from comfyui_mova.nodes.sampling.spec import SAMPLER_OPTIONS_NODE
from comfyui_mova.nodes.conditioning.condition import empty_joint_latent
from comfyui_mova.nodes.handles import LATENT_AUDIO_KEY, MovaConditioning, SamplerSettings
from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_video_expert
from comfyui_mova.nodes.sampling.run import (cache_report, make_settings, needs_negative, sample_joint,
                                         sampling_options)

STEPS = 6
DEFAULTS = {w.name: w.default for w in SAMPLER_OPTIONS_NODE.widgets}


@pytest.fixture(scope="module")
def setup(golden_dir, golden_cases, golden_tensors):
    ckpt, c, g = golden_dir / "checkpoint", golden_cases, golden_tensors
    parts = (load_video_expert(ckpt / "video_dit"), load_video_expert(ckpt / "video_dit_2"),
             load_audio_tower(ckpt / "audio_dit", ckpt / "dual_tower_bridge"))
    dac = config_from_dict(DACConfig, json.loads((ckpt / "audio_vae" / "config.json").read_text()))
    cond = MovaConditioning(g["context_pos"], g["context_neg"], g["condition"], c["width"], c["height"],
                            c["num_frames"], c["fps"])
    return parts, cond, empty_joint_latent(c["width"], c["height"], c["num_frames"], c["fps"], dac)


def _node(setup, settings=None, cfg=5.0, stats=None):
    parts, cond, latent = setup
    return sample_joint(*parts, cond, latent, 7, STEPS, cfg, 5.0, 0.9, settings=settings, stats=stats)


def _core(setup, negative=True, **options):
    (high, low, tower), cond, latent = setup
    towers = MovaTowers([high.model, low.model], tower.model.audio_dit, tower.model.bridge)
    noise = make_noise(latent["samples"].shape, latent[LATENT_AUDIO_KEY].samples.shape, 7)
    opts = SamplingOptions(**({"steps": STEPS, "cfg_scale": 5.0, "shift": 5.0, "fps": cond.fps,
                               "scheduler": read_release_settings(release_root(high.source)).scheduler} | options))
    return sample(towers, cond.condition, cond.context_pos, cond.context_neg if negative else None, *noise, opts)


def test_widget_defaults_are_the_official_sampler(setup):
    settings = make_settings(**DEFAULTS)
    assert settings == SamplerSettings()
    assert sampling_options(50, 5.0, 5.0, 0.9, 24.0, settings) == sampling_options(50, 5.0, 5.0, 0.9, 24.0) == \
        SamplingOptions(fps=24.0)
    plain, _ = _node(setup)
    with_defaults, _ = _node(setup, settings)
    assert torch.equal(plain["samples"], with_defaults["samples"])


def test_widgets_map_to_the_core_options():
    settings = make_settings(bridge_cfg=3.5, audio_cfg=2.0, audio_shift=3.0, cfg_cutoff=0.5, cache_threshold=0.3)
    opts = sampling_options(20, 6.0, 5.0, 0.9, 24.0, settings)
    assert (opts.bridge_cfg_scale, opts.audio_cfg_scale, opts.audio_shift, opts.cfg_cutoff, opts.cache_threshold) \
        == (3.5, 2.0, 3.0, 0.5, 0.3)
    assert (opts.steps, opts.cfg_scale, opts.shift) == (20, 6.0, 5.0)
    zero = sampling_options(20, 6.0, 4.0, 0.9, 24.0, make_settings(1.0, 0.0, 0.0, 1.0, 0.0))
    assert zero.audio_cfg_scale is None and zero.audio_shift is None  # 0: the sampler's own cfg and shift


@pytest.mark.parametrize("settings, options", [
    (SamplerSettings(bridge_cfg=3.5), {"bridge_cfg_scale": 3.5}),
    (SamplerSettings(audio_cfg=2.0, audio_shift=2.5), {"audio_cfg_scale": 2.0, "audio_shift": 2.5}),
    (SamplerSettings(cfg_cutoff=0.5), {"cfg_cutoff": 0.5}),
], ids=["dual_cfg", "audio_cfg_and_shift", "cfg_cutoff"])
def test_each_option_reaches_the_sampler(setup, settings, options):
    video, audio = _node(setup, settings)
    ref_video, ref_audio = _core(setup, **options)
    _, official_audio = _core(setup)
    assert torch.allclose(audio.samples, ref_audio)
    assert torch.allclose(video["samples"], denormalise_video_latents(ref_video))
    assert not torch.allclose(audio.samples, official_audio)  # the option changes the result
    if "audio_cfg_scale" not in options:  # audio-only settings leave the video alone
        assert not torch.allclose(video["samples"], _node(setup)[0]["samples"])


def test_audio_cfg_alone_uses_the_negative_prompt(setup):
    """cfg 1 skips the negative prompt, unless the audio has its own CFG."""
    assert not needs_negative(sampling_options(4, 1.0, 5.0, 0.9, 24.0))
    assert needs_negative(sampling_options(4, 1.0, 5.0, 0.9, 24.0, SamplerSettings(audio_cfg=4.0)))
    _, audio = _node(setup, SamplerSettings(audio_cfg=4.0), cfg=1.0)
    _, ref_audio = _core(setup, cfg_scale=1.0, audio_cfg_scale=4.0)
    assert torch.allclose(audio.samples, ref_audio)
    parts, cond, latent = setup
    no_negative = dataclasses.replace(cond, context_neg=None)
    with pytest.raises(ValueError, match="needs a negative prompt"):
        sample_joint(*parts, no_negative, latent, 7, 2, 1.0, 5.0, 0.9, settings=SamplerSettings(audio_cfg=4.0))


def test_step_caching_reports_skipped_steps(setup):
    stats = {}
    _, audio = _node(setup, SamplerSettings(cache_threshold=0.5), stats=stats)
    assert stats["computed_steps"] + stats["skipped_steps"] == STEPS and stats["skipped_steps"] > 0
    _, ref_audio = _core(setup, cache_threshold=0.5)
    assert torch.allclose(audio.samples, ref_audio)
    assert cache_report(stats) == (f"step caching skipped {stats['skipped_steps']} of {STEPS} steps "
                                   f"({stats['skipped_steps'] / STEPS:.0%})")
    assert cache_report({"computed_steps": 12, "skipped_steps": 8}) == "step caching skipped 8 of 20 steps (40%)"


@pytest.mark.parametrize("settings, message", [
    (SamplerSettings(cfg_cutoff=1.5), "cfg_cutoff 1.5 must lie in 0..1"),
    (SamplerSettings(cache_threshold=-0.1), "cache_threshold -0.1 must be 0 .off. or positive"),
    (SamplerSettings(audio_shift=-1.0), "audio_shift -1.0 must be positive"),
    ("not options", "expected the output of MOVA Sampler Options"),
])
def test_bad_settings_name_the_fix(settings, message):
    with pytest.raises(ValueError, match=message):
        sampling_options(4, 5.0, 5.0, 0.9, 24.0, settings)
