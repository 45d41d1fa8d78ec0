"""Checkpoint loading: release folders, shards, single files, dtypes, config detection, and clear errors."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_mova.mova_model import configs
from comfyui_mova.mova_model.weights import detect, loading
from comfyui_mova.mova_model.weights.checkpoint import CheckpointError, open_checkpoint
from comfyui_mova.mova_model.networks.dit import WanDiT
from comfyui_mova.mova_model.sampling.joint import check_towers


def _merged_state(folder):
    """All tensors of a (possibly sharded) component folder, read with plain safetensors."""
    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state


def test_sharded_and_single_file_give_identical_weights(golden_dir, tmp_path):
    sharded = golden_dir / "checkpoint" / "video_dit_2"
    single = tmp_path / "low_expert.safetensors"
    save_file(_merged_state(sharded), str(single))
    a = loading.load_component(sharded, "video_dit", dtype=torch.float32)
    b = loading.load_component(single, "video_dit", dtype=torch.float32)  # config from shapes
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_release_root_and_component_folder_agree(golden_dir):
    root = loading.load_component(golden_dir / "checkpoint", "audio_dit", dtype=torch.float32)
    folder = loading.load_component(golden_dir / "checkpoint" / "audio_dit", "audio_dit", dtype=torch.float32)
    for (k, v), (_, w) in zip(root.state_dict().items(), folder.state_dict().items()):
        assert torch.equal(v, w), k


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_weights_load_into_requested_dtype(golden_dir, tmp_path, dtype):
    state = {k: v.to(torch.bfloat16) for k, v in _merged_state(golden_dir / "checkpoint" / "audio_dit").items()}
    path = tmp_path / "audio_dit_bf16.safetensors"
    save_file(state, str(path))
    assert loading.stored_dtype(open_checkpoint(path)) == torch.bfloat16
    model = loading.load_component(path, "audio_dit", dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert torch.equal(model.state_dict()["head.head.weight"], state["head.head.weight"].to(dtype))
    assert loading.load_component(path, "audio_dit").head.head.weight.dtype == torch.bfloat16  # default: as stored


def test_config_from_metadata(golden_dir, tmp_path):
    state = _merged_state(golden_dir / "checkpoint" / "audio_dit")
    cfg = json.loads((golden_dir / "checkpoint" / "audio_dit" / "config.json").read_text())
    path = tmp_path / "audio.safetensors"
    save_file(state, str(path), metadata={detect.METADATA_CONFIG: json.dumps(cfg)})
    model = loading.load_component(path, "audio_dit")
    assert model.config.num_heads == cfg["num_heads"]


def test_config_from_shapes_defaults_to_head_dim_128(tmp_path):
    config = configs.DiTConfig(dim=256, num_heads=2, num_layers=2, ffn_dim=64, in_dim=36, out_dim=16,
                               patch_size=(1, 2, 2), text_dim=32, freq_dim=16)
    model = WanDiT(config)
    path = tmp_path / "expert.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert detect.detect_config(open_checkpoint(path), "video_dit") == config
    loaded = loading.load_component(path, "video_dit")
    assert loaded.config == config


def test_bridge_and_dac_configs_from_shapes(golden_dir, tmp_path):
    ckpt = golden_dir / "checkpoint"
    bridge_cfg = json.loads((ckpt / "dual_tower_bridge" / "config.json").read_text())
    detected = detect.bridge_config_from_shapes(open_checkpoint(ckpt / "dual_tower_bridge").shapes(),
                                                head_dim=bridge_cfg["head_dim"])
    assert detected.visual_hidden_dim == bridge_cfg["visual_hidden_dim"]
    assert detected.audio_hidden_dim == bridge_cfg["audio_hidden_dim"]
    assert len(detected.interaction_layers) == min(bridge_cfg["visual_layers"], bridge_cfg["audio_layers"])
    dac_cfg = configs.config_from_dict(configs.DACConfig, json.loads((ckpt / "audio_vae" / "config.json").read_text()))
    for source in (ckpt / "audio_vae", golden_dir / "dac_weightnorm.safetensors"):
        shapes = open_checkpoint(source).shapes()
        assert detect.dac_config_from_shapes(shapes, sample_rate=dac_cfg.sample_rate) == dac_cfg


# ---- errors: each names the file and the fix -------------------------------------------------

def _copy_component(golden_dir, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(golden_dir / "checkpoint" / name, dst)
    return dst


def test_truncated_shard_is_named(golden_dir, tmp_path):
    folder = _copy_component(golden_dir, tmp_path, "video_dit_2")
    shard = sorted(folder.glob("*-of-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=rf"{shard.name} is truncated.*download"):
        loading.load_component(folder, "video_dit")


def test_missing_shard_is_named(golden_dir, tmp_path):
    folder = _copy_component(golden_dir, tmp_path, "video_dit_2")
    shard = sorted(folder.glob("*-of-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=rf"missing shard\(s\) {shard.name}.*download"):
        loading.load_component(folder, "video_dit")


def test_audio_dit_offered_as_video_expert(golden_dir):
    with pytest.raises(CheckpointError, match=r"audio DiT.*video expert.*pick the video_dit"):
        loading.load_component(golden_dir / "checkpoint" / "audio_dit", "video_dit")


def test_video_expert_offered_as_bridge(golden_dir):
    with pytest.raises(CheckpointError, match=r"video expert.*bridge"):
        loading.load_component(golden_dir / "checkpoint" / "video_dit", "dual_tower_bridge")


def test_missing_and_unexpected_keys_are_listed(golden_dir, tmp_path):
    folder = _copy_component(golden_dir, tmp_path, "audio_dit")
    weights = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    del state["blocks.1.ffn.2.bias"]
    state["blocks.0.extra_adapter.weight"] = torch.zeros(2)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"1 missing \(first: blocks\.1\.ffn\.2\.bias\); "
                                              r"1 unexpected \(first: blocks\.0\.extra_adapter\.weight\)"):
        loading.load_component(folder, "audio_dit")


def test_config_that_does_not_fit_the_weights(golden_dir, tmp_path):
    folder = _copy_component(golden_dir, tmp_path, "audio_dit")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["ffn_dim"] += 8
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"ffn.*shape.*config.json"):
        loading.load_component(folder, "audio_dit")


def test_bridge_that_does_not_fit_the_towers(golden_dir, tmp_path):
    ckpt = golden_dir / "checkpoint"
    video = loading.load_component(ckpt, "video_dit", component="video_dit")
    bridge = loading.load_component(ckpt, "dual_tower_bridge")
    other = configs.DiTConfig(**{**configs.config_to_dict(video.config), "dim": video.config.dim * 2,
                                 "num_heads": video.config.num_heads})
    with pytest.raises(ValueError, match=r"bridge visual_hidden_dim .* video expert dim.*same MOVA release"):
        check_towers(WanDiT(other), loading.load_component(ckpt, "audio_dit"), bridge)


def test_release_root_needs_a_component_name(golden_dir):
    with pytest.raises(CheckpointError, match=r"whole MOVA release: say which component"):
        open_checkpoint(golden_dir / "checkpoint")


def test_not_safetensors_and_missing_path(tmp_path):
    bad = tmp_path / "weights.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"not a \.safetensors or \.gguf file"):
        open_checkpoint(bad)
    with pytest.raises(CheckpointError, match=r"does not exist"):
        open_checkpoint(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"truncated or not a safetensors file"):
        open_checkpoint(garbage)
