"""The release's sampling settings (scheduler/scheduler_config.json, model_index.json) reach the sampler; the
widgets stay the user's choice and differences are reported."""

import dataclasses
import json
import shutil

import pytest
import torch

from comfyui_mova.mova_model.weights.checkpoint import CheckpointError
from comfyui_mova.mova_model.configs import SchedulerConfig
from comfyui_mova.mova_model.weights.release import read_release_settings, release_root
from comfyui_mova.mova_model.sampling.sampler import MovaTowers, SamplingOptions, make_noise, sample
from comfyui_mova.nodes.conditioning.condition import empty_joint_latent
from comfyui_mova.nodes.handles import LATENT_AUDIO_KEY, MovaConditioning
from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_video_expert
from comfyui_mova.nodes.sampling.run import sample_joint, used_settings

STEPS = 3


@pytest.fixture(scope="module")
def release(golden_dir, tmp_path_factory):
    """A copy of the golden release whose scheduler and boundary differ from MOVA's defaults."""
    root = tmp_path_factory.mktemp("release") / "MOVA-test"
    shutil.copytree(golden_dir / "checkpoint", root)
    config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    config |= {"shift": 3.0, "sigma_min": 0.1, "extra_one_step": False}
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    index = json.loads((root / "model_index.json").read_text()) | {"boundary_ratio": 0.8}
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def test_golden_release_settings(golden_dir, golden_cases):
    settings = read_release_settings(golden_dir / "checkpoint")
    s = golden_cases["scheduler"]
    assert settings.scheduler == SchedulerConfig(num_train_timesteps=s["num_train_timesteps"], shift=s["shift"],
                                                 sigma_max=s["sigma_max"], sigma_min=s["sigma_min"],
                                                 extra_one_step=s["extra_one_step"])
    assert settings.boundary_ratio == golden_cases["boundary_ratio"]
    assert set(settings.found) == {"model_index.json", "scheduler/scheduler_config.json"}
    assert release_root(golden_dir / "checkpoint" / "video_dit") == golden_dir / "checkpoint"
    assert release_root(golden_dir / "checkpoint" / "video_dit" / "config.json") is None


def test_sampler_uses_the_release_scheduler(release, golden_cases, golden_tensors):
    high, low = load_video_expert(release / "video_dit"), load_video_expert(release / "video_dit_2")
    tower = load_audio_tower(release / "audio_dit", release / "dual_tower_bridge")
    c = golden_cases
    from comfyui_mova.mova_model.configs import DACConfig, config_from_dict
    dac = config_from_dict(DACConfig, json.loads((release / "audio_vae" / "config.json").read_text()))
    cond = MovaConditioning(golden_tensors["context_pos"], golden_tensors["context_neg"], golden_tensors["condition"],
                            c["width"], c["height"], c["num_frames"], c["fps"])
    latent = empty_joint_latent(c["width"], c["height"], c["num_frames"], c["fps"], dac)
    stats = {}
    video, audio = sample_joint(high, low, tower, cond, latent, 3, STEPS, 5.0, 5.0, 0.9, stats=stats)
    scheduler = SchedulerConfig(shift=3.0, sigma_min=0.1, extra_one_step=False)
    assert stats["scheduler"] == scheduler
    towers = MovaTowers([high.model, low.model], tower.model.audio_dit, tower.model.bridge)
    noise = make_noise(latent["samples"].shape, latent[LATENT_AUDIO_KEY].samples.shape, 3)
    options = SamplingOptions(steps=STEPS, cfg_scale=5.0, shift=5.0, boundary_ratio=0.9, fps=c["fps"])
    _, ref = sample(towers, cond.condition, cond.context_pos, cond.context_neg, *noise,
                    dataclasses.replace(options, scheduler=scheduler))
    _, default = sample(towers, cond.condition, cond.context_pos, cond.context_neg, *noise, options)
    assert torch.allclose(audio.samples, ref) and not torch.allclose(audio.samples, default)


def test_report_names_what_is_used_and_what_differs(release):
    high, low = load_video_expert(release / "video_dit"), load_video_expert(release / "video_dit_2")
    settings, report, warnings = used_settings(high, low, 5.0, 0.9)
    assert settings.scheduler.sigma_min == 0.1
    assert report == (f"shift 5, boundary_ratio 0.9 (widgets); sigma_min 0.1, extra_one_step false "
                      f"(release {release})")
    assert warnings == [
        "shift 5 differs from the release's 3 (scheduler/scheduler_config.json): using 5, the widget's value",
        "boundary_ratio 0.9 differs from the release's 0.8 (model_index.json): using 0.9, the widget's value"]
    _, _, warnings = used_settings(high, low, 3.0, 0.8)
    assert warnings == []


def test_single_files_use_the_defaults(golden_dir):
    high = load_video_expert(golden_dir / "checkpoint" / "video_dit")
    single = dataclasses.replace(high, source=str(golden_dir / "checkpoint" / "video_dit" /
                                                  "diffusion_pytorch_model.safetensors"))
    settings, report, warnings = used_settings(single, single, 5.0, 0.9)
    assert settings.scheduler == SchedulerConfig() and not settings.found and warnings == []
    assert report.endswith("(MOVA's defaults (no release folder))")


def test_experts_from_two_releases(golden_dir, release):
    one = load_video_expert(golden_dir / "checkpoint" / "video_dit")
    two = load_video_expert(release / "video_dit_2")
    settings, _, warnings = used_settings(one, two, 5.0, 0.9)
    assert settings == read_release_settings(golden_dir / "checkpoint")
    assert warnings[0].startswith("the experts come from two releases with other settings")


@pytest.mark.parametrize("file,content,message", [
    ("scheduler/scheduler_config.json", "{not json", "is not a readable JSON file"),
    ("scheduler/scheduler_config.json", "[1, 2]", "holds a JSON list, not an object"),
    ("scheduler/scheduler_config.json", '{"shift": NaN}', "shift is nan, expected a number above 0"),
    ("scheduler/scheduler_config.json", '{"shift": "5"}', "shift is '5', expected a number"),
    ("scheduler/scheduler_config.json", '{"extra_one_step": "yes"}', "extra_one_step is 'yes', expected true or false"),
    ("scheduler/scheduler_config.json", '{"sigma_min": 1.0}', "sigma_min 1 is not below sigma_max 1"),
    ("scheduler/scheduler_config.json", '{"num_train_timesteps": 0}', "num_train_timesteps is 0"),
    ("model_index.json", '{"boundary_ratio": 2}', "boundary_ratio is 2, expected a number in 0..1"),
])
def test_broken_release_files_are_named(release, tmp_path, file, content, message):
    root = tmp_path / "MOVA-broken"
    shutil.copytree(release, root, ignore=shutil.ignore_patterns("*.safetensors"))
    (root / file).write_text(content)
    with pytest.raises(CheckpointError, match=f"{file}.*{message}"):
        read_release_settings(root)
