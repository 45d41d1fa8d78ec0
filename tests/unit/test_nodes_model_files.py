"""Loader logic: listing model folders, resolving choices, loading components with a weight dtype."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from comfyui_mova.mova_model.networks.bridge import DualTowerBridge
from comfyui_mova.mova_model.weights.checkpoint import CheckpointError
from comfyui_mova.mova_model.configs import BridgeConfig, config_to_dict
from comfyui_mova.nodes.handles import HIGH_NOISE, LOW_NOISE, AudioTower
from comfyui_mova.nodes.loaders.model_files import (
    list_choices, load_audio_tower, load_audio_vae, load_video_expert, needs_fp8_layers, resolve_choice,
    weight_dtype,
)


@pytest.fixture()
def models(golden_dir, tmp_path):
    """A ComfyUI-like diffusion_models folder: a release folder, a single file, and clutter."""
    root = tmp_path / "diffusion_models"
    shutil.copytree(golden_dir / "checkpoint", root / "MOVA-tiny", copy_function=shutil.copyfile)
    for folder in [root, *root.rglob("*")]:
        if folder.is_dir():  # the golden copy may be read-only
            folder.chmod(0o755)
    shutil.copyfile(golden_dir / "checkpoint" / "audio_dit" / "diffusion_pytorch_model.safetensors",
                root / "mova_audio_dit.safetensors")
    (root / "other").mkdir()
    (root / "other" / "wan_lora.safetensors").write_bytes(b"")
    (root / "notes.txt").write_text("not a model")
    return root


def _filenames(root):
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


def test_component_folders_are_one_choice(models):
    choices = list_choices(_filenames(models), [models])
    assert choices == [
        "MOVA-tiny/audio_dit", "MOVA-tiny/audio_vae", "MOVA-tiny/dual_tower_bridge",
        "MOVA-tiny/video_dit", "MOVA-tiny/video_dit_2",
        "mova_audio_dit.safetensors", "other/wan_lora.safetensors",
    ]


def test_sharded_folder_without_config_is_still_one_choice(models):
    (models / "MOVA-tiny" / "video_dit_2" / "config.json").unlink()
    assert "MOVA-tiny/video_dit_2" in list_choices(_filenames(models), [models])


def test_choices_across_several_roots(models, tmp_path):
    extra = tmp_path / "extra"
    shutil.copytree(models / "MOVA-tiny" / "audio_vae", extra / "dac", copy_function=shutil.copyfile)
    names = _filenames(models) + _filenames(extra)
    assert "dac" in list_choices(names, [models, extra])


def test_resolve_choice(models, tmp_path):
    assert resolve_choice("MOVA-tiny/video_dit", [tmp_path / "nowhere", models], "diffusion_models") == \
        models / "MOVA-tiny" / "video_dit"
    with pytest.raises(FileNotFoundError, match=r"'gone.safetensors' is not in models/diffusion_models.*download"):
        resolve_choice("gone.safetensors", [models], "diffusion_models")


def test_expert_roles_from_release_folders(models):
    high = load_video_expert(models / "MOVA-tiny" / "video_dit")
    low = load_video_expert(models / "MOVA-tiny" / "video_dit_2")  # sharded
    assert (high.role, low.role) == (HIGH_NOISE, LOW_NOISE)
    assert high.compute_dtype == torch.float32
    assert str(models / "MOVA-tiny" / "video_dit") == high.source


@pytest.mark.parametrize("choice, stored, compute", [
    ("default", torch.float32, torch.float32),
    ("bf16", torch.bfloat16, torch.bfloat16),
    ("fp16", torch.float16, torch.float16),
    ("fp8_e4m3fn", torch.float8_e4m3fn, torch.bfloat16),
])
def test_weight_dtype_choices(models, choice, stored, compute):
    part = load_video_expert(models / "MOVA-tiny" / "video_dit", dtype=weight_dtype(choice))
    assert part.model.blocks[0].self_attn.q.weight.dtype == stored
    assert part.compute_dtype == compute


def test_unknown_weight_dtype():
    with pytest.raises(ValueError, match="weight_dtype 'int4' is not one of default"):
        weight_dtype("int4")


def test_single_file_role_from_metadata(models, golden_dir, tmp_path):
    file = tmp_path / "expert.safetensors"
    shutil.copyfile(golden_dir / "checkpoint" / "video_dit" / "diffusion_pytorch_model.safetensors", file)
    meta = {"mova.config": (golden_dir / "checkpoint" / "video_dit" / "config.json").read_text()}
    from safetensors.torch import load_file
    save_file(load_file(str(file)), str(file), metadata=meta)
    assert load_video_expert(file).role is None
    save_file(load_file(str(file)), str(file), metadata=meta | {"mova.expert": "low"})  # as the converter writes
    assert load_video_expert(file).role == LOW_NOISE


def test_wrong_component_names_the_file(models):
    with pytest.raises(CheckpointError, match="audio VAE.*video expert"):
        load_video_expert(models / "MOVA-tiny" / "audio_vae")


def test_audio_tower_and_vae(models):
    tower = load_audio_tower(models / "MOVA-tiny" / "audio_dit", models / "MOVA-tiny" / "dual_tower_bridge")
    assert isinstance(tower.model, AudioTower)
    assert tower.model.bridge.config.audio_hidden_dim == tower.model.audio_dit.config.dim
    vae = load_audio_vae(models / "MOVA-tiny" / "audio_vae", dtype=torch.float16)
    assert vae.compute_dtype == torch.float16
    assert vae.model.config.sample_rate == json.loads((models / "MOVA-tiny" / "audio_vae" / "config.json")
                                                      .read_text())["sample_rate"]


def test_bridge_from_another_release_is_refused(models, tmp_path):
    config = BridgeConfig(visual_layers=3, audio_layers=2, visual_hidden_dim=64, audio_hidden_dim=32, head_dim=16)
    bridge = DualTowerBridge(config)
    folder = tmp_path / "other_bridge"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in bridge.state_dict().items()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config_to_dict(config)))
    with pytest.raises(ValueError, match="does not fit the audio DiT.*same MOVA release"):
        load_audio_tower(models / "MOVA-tiny" / "audio_dit", folder)


def test_fp8_layers_needed_when_asked_or_stored(models, tmp_path):
    expert = models / "MOVA-tiny" / "video_dit"
    assert not needs_fp8_layers([expert], None)
    assert needs_fp8_layers([expert], torch.float8_e4m3fn)
    fp8 = load_video_expert(expert, dtype=torch.float8_e4m3fn)  # quantised on load (scale_weight per layer)
    stored = tmp_path / "expert_fp8.safetensors"
    meta = {"mova.config": (expert / "config.json").read_text()}
    save_file({k: v.contiguous() for k, v in fp8.model.state_dict().items()}, str(stored), metadata=meta)
    assert needs_fp8_layers([models / "MOVA-tiny" / "audio_dit", stored], None)
    assert not needs_fp8_layers([stored], torch.bfloat16)  # a float dtype dequantises
    again = load_video_expert(stored)
    assert again.model.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    assert again.compute_dtype == torch.bfloat16
