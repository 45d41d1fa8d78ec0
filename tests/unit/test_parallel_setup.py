"""MOVA Parallel's settings and refusals (no processes): the modes' degrees, what does not compose, the devices
widget, and what the workers are told to load from the loaders' parts. Head counts come from the configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from comfyui_mova.mova_model.configs import VIDEO_DIT_A14B
from comfyui_mova.mova_model.lora.load import LoraPatch
from comfyui_mova.mova_model.parallel.plan import MODES, ParallelPlan, plan_for, plan_problems, ulysses_degrees
from comfyui_mova.mova_model.sampling.sampler import SamplingOptions
from comfyui_mova.nodes.parallel import spec
from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_video_expert
from comfyui_mova.nodes.parallel.setup import check_run, make_setup, models_for, parse_devices
from tiny_release import write_release


def test_modes_and_degrees():
    assert spec.PARALLEL_MODES == MODES
    assert plan_for("ulysses", 4) == ParallelPlan(1, 4)
    assert plan_for("cfg", 3, shard_weights=True) == ParallelPlan(3, 1, True)
    assert plan_for("cfg+ulysses", 8) == ParallelPlan(2, 4)
    with pytest.raises(ValueError, match="at least 2 devices"):
        plan_for("ulysses", 1)
    with pytest.raises(ValueError, match="at most 3"):
        plan_for("cfg", 4)
    with pytest.raises(ValueError, match="even number"):
        plan_for("cfg+ulysses", 5)
    assert ulysses_degrees(VIDEO_DIT_A14B.num_heads) == [2, 4, 5, 8]  # MOVA's video expert: 40 heads


def test_what_does_not_compose_is_refused_with_the_fix():
    heads = VIDEO_DIT_A14B.num_heads
    assert plan_problems(ParallelPlan(2, 4, True), heads, passes=2) == []
    (problem,) = plan_problems(ParallelPlan(1, 3), heads, passes=2)
    assert "40 attention heads" in problem and "2, 4, 5, 8" in problem
    (problem,) = plan_problems(ParallelPlan(2, 1), heads, passes=1)
    assert "cfg 1" in problem and "mode ulysses" in problem
    (problem,) = plan_problems(ParallelPlan(3, 1), heads, passes=2)
    assert "dual CFG" in problem
    assert plan_problems(ParallelPlan(3, 1), heads, passes=3) == []
    (problem,) = plan_problems(ParallelPlan(1, 2), heads, passes=2, compile="blocks")
    assert "compile" in problem
    assert plan_problems(ParallelPlan(2, 1), heads, passes=2, compile="blocks") == []  # CFG alone compiles
    (problem,) = plan_problems(ParallelPlan(2, 1), heads, passes=2, attention="comfy")
    assert "worker processes" in problem
    (problem,) = plan_problems(ParallelPlan(2, 1, True), heads, passes=2, swap_blocks=4)
    assert "block swap" in problem


@pytest.mark.parametrize("text,gpus,devices", [
    ("all", 4, ("cuda:0", "cuda:1", "cuda:2", "cuda:3")),
    (" 0, 2 ", 3, ("cuda:0", "cuda:2")),
    ("cpu:3", 0, ("cpu",) * 3),
])
def test_devices(text, gpus, devices):
    assert parse_devices(text, gpus, platform="linux") == devices


@pytest.mark.parametrize("text,gpus,platform,message", [
    ("all", 1, "linux", "sees 1 GPU"),
    ("0,0", 2, "linux", "names a GPU twice"),
    ("0,5", 2, "linux", "GPU 5 does not exist"),
    ("1", 2, "linux", "2 or more GPUs"),
    ("0;1", 2, "linux", "write all"),
    ("cpu:1", 0, "linux", "cpu:N with N from 2"),
    ("0,1", 2, "win32", "Linux only"),
])
def test_devices_refused(text, gpus, platform, message):
    with pytest.raises(ValueError, match=message):
        parse_devices(text, gpus, platform=platform)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = write_release(tmp_path_factory.mktemp("release") / "MOVA-tiny")
    high = load_video_expert(root / "video_dit")
    low = load_video_expert(root / "video_dit_2")
    tower = load_audio_tower(root / "audio_dit", root / "dual_tower_bridge")
    return high, low, tower


def test_check_run_takes_the_heads_from_the_expert(parts):
    high = parts[0]
    heads = high.model.config.num_heads
    odd = next(n for n in range(2, 9) if heads % n)
    setup = make_setup(f"cpu:{odd}", "ulysses", False, 0, True, 0)
    with pytest.raises(ValueError, match=f"{heads} attention heads"):
        check_run(setup, high, SamplingOptions(steps=2), has_negative=True)
    setup = make_setup("cpu:2", "cfg", False, 0, True, 0)
    check_run(setup, high, SamplingOptions(steps=2), has_negative=True)
    with pytest.raises(ValueError, match="cfg 1"):
        check_run(setup, high, SamplingOptions(steps=2, cfg_scale=1.0), has_negative=False)
    layers = high.model.config.num_layers
    with pytest.raises(ValueError, match=f"all {layers} blocks"):
        check_run(make_setup("cpu:2", "cfg", False, layers, True, 0), high, SamplingOptions(steps=2), True)
    with pytest.raises(ValueError, match="swap_blocks"):
        make_setup("cpu:2", "cfg", False, -1, True, 0)


def test_models_for_the_workers(parts):
    high, low, tower = parts
    weight = "blocks.0.self_attn.q.weight"
    patch = LoraPatch(down=torch.ones(2, 3), up=torch.ones(4, 2), scale=0.5)
    tower = dataclasses.replace(tower, loras=(({f"audio_dit.{weight}": patch, f"bridge.x.weight": patch}, 0.7),))
    high = dataclasses.replace(high, loras=(({weight: patch}, 1.5),), fp8=True)
    models = models_for(make_setup("cpu:2", "cfg", False, 1, True, 0), high, low, tower)
    assert [e["path"] for e in models["experts"]] == [high.files[0], low.files[0]]
    assert models["experts"][0]["fp8"] and not models["experts"][1]["fp8"]
    assert models["experts"][0]["loras"][0]["strength"] == 1.5 and models["experts"][1]["loras"] == []
    assert list(models["audio_dit"]["loras"][0]["patches"]) == [weight]  # the tower's keys split per network
    assert list(models["bridge"]["loras"][0]["patches"]) == ["x.weight"]
    assert models["swap_blocks"] == 1 and models["compute_dtype"] == str(high.compute_dtype).replace("torch.", "")
    again = models_for(make_setup("cpu:2", "cfg", False, 1, True, 0), high, low, tower)
    assert again["key"] == models["key"]  # the workers keep what they hold
    other = dataclasses.replace(high, loras=(({weight: patch}, 1.0),), fp8=True)
    assert models_for(make_setup("cpu:2", "cfg", False, 1, True, 0), other, low, tower)["key"] != models["key"]
    with pytest.raises(ValueError, match="low_noise_expert"):
        models_for(make_setup("cpu:2", "cfg", False, 0, True, 0), high, dataclasses.replace(low, files=()), tower)
