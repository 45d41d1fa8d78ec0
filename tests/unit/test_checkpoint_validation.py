"""Hostile or damaged files stop with a CheckpointError naming the file (and the tensor or shard) before any
weight is read: safetensors headers, shard indexes, config.json files."""

import json
import re
import shutil
import struct

import pytest
import torch

from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.weights.checkpoint import CheckpointError, open_checkpoint


def _write(path, header, data: bytes = b""):
    """A safetensors file from a raw header (any JSON) and raw data bytes."""
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header,data,message", [
    ([1, 2], b"", "its header is a JSON list"),
    ({"w": 5}, b"", "tensor 'w' has a header entry of type int"),
    ({"w": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8), "tensor 'w' has dtype None"),
    ({"w": F32x2 | {"shape": [-2]}}, bytes(8), r"tensor 'w' has shape \[-2\]"),
    ({"w": F32x2 | {"shape": "2"}}, bytes(8), "tensor 'w' has shape '2'"),
    ({"w": F32x2 | {"shape": [2.0]}}, bytes(8), r"tensor 'w' has shape \[2.0\]"),
    ({"w": F32x2 | {"shape": [True]}}, bytes(8), r"tensor 'w' has shape \[True\]"),
    ({"w": F32x2 | {"data_offsets": [8, 0]}}, bytes(8), r"tensor 'w' has data_offsets \[8, 0\]"),
    ({"w": F32x2 | {"data_offsets": ["0", "8"]}}, bytes(8), "tensor 'w' has data_offsets"),
    ({"w": F32x2 | {"data_offsets": [0]}}, bytes(8), "tensor 'w' has data_offsets"),
    ({"w": F32x2 | {"data_offsets": [0, 4]}}, bytes(4), r"tensor 'w' is F32 \[2\] \(8 bytes\) but its offsets hold 4"),
    ({"a": F32x2, "b": F32x2 | {"data_offsets": [12, 20]}}, bytes(20), "tensor 'b' starts at byte 12 .* gap"),
    ({"a": F32x2, "b": F32x2 | {"data_offsets": [4, 12]}}, bytes(12), "tensor 'b' starts at byte 4 .*overlap"),
    ({"w": F32x2}, bytes(4), "is truncated: its header promises 8 bytes of tensor data but the file holds 4"),
    ({"w": F32x2}, bytes(12), "has 4 bytes after its last tensor"),
    ({"__metadata__": {"a": 1}, "w": F32x2}, bytes(8), "its __metadata__ is not a table of texts"),
    ({"__metadata__": [1], "w": F32x2}, bytes(8), "its __metadata__ is not a table of texts"),
])
def test_bad_headers_are_named(tmp_path, header, data, message):
    path = _write(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + message):
        open_checkpoint(path)
    with pytest.raises(CheckpointError, match=message):
        loading.load_component(path, "video_dit")


def test_huge_header_length_is_refused(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2 ** 40) + b"{}")
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        open_checkpoint(path)


def test_a_valid_file_passes(tmp_path):
    path = _write(tmp_path / "ok.safetensors", {"__metadata__": {"k": "v"}, "b": F32x2 | {"data_offsets": [8, 16]},
                                                "a": F32x2, "empty": {"dtype": "BF16", "shape": [0, 3],
                                                                       "data_offsets": [16, 16]}}, bytes(16))
    ckpt = open_checkpoint(path)
    assert ckpt.shapes() == {"a": (2,), "b": (2,), "empty": (0, 3)} and ckpt.metadata == {"k": "v"}
    assert torch.equal(ckpt.get("b"), torch.zeros(2))


@pytest.fixture()
def sharded(golden_dir, tmp_path):
    folder = tmp_path / "release" / "video_dit_2"
    shutil.copytree(golden_dir / "checkpoint" / "video_dit_2", folder)
    return folder


@pytest.mark.parametrize("shard", ["../video_dit/diffusion_pytorch_model.safetensors", "/etc/hostname",
                                   "C:\\models\\x.safetensors", "sub\\..\\..\\x.safetensors", "a/../../x.safetensors",
                                   "", 5, None])
def test_shards_must_stay_inside_the_folder(sharded, shard):
    index_path = sharded / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    key = sorted(index["weight_map"])[0]
    index["weight_map"][key] = shard
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(index_path))} names shard .* for {re.escape(key)}, "
                       "which is not a file inside"):
        loading.load_component(sharded, "video_dit")


@pytest.mark.parametrize("content", ["{broken", "[]", '{"weight_map": []}', '{"weight_map": {}}', '{"metadata": {}}'])
def test_broken_index_is_named(sharded, content):
    index_path = sharded / "diffusion_pytorch_model.safetensors.index.json"
    index_path.write_text(content)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(index_path))} is not a valid shard index"):
        open_checkpoint(sharded)


@pytest.fixture()
def expert(golden_dir, tmp_path):
    folder = tmp_path / "video_dit"
    shutil.copytree(golden_dir / "checkpoint" / "video_dit", folder)
    return folder


def _set_config(folder, text):
    (folder / "config.json").write_text(text)
    return re.escape(str(folder / "config.json"))


@pytest.mark.parametrize("text,message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2, 3]", "holds a JSON list, not a config object"),
    ('"video_dit"', "holds a JSON str, not a config object"),
])
def test_config_that_is_not_a_json_object(expert, text, message):
    where = _set_config(expert, text)
    with pytest.raises(CheckpointError, match=f"{where} {message}"):
        loading.load_component(expert, "video_dit")


def test_config_of_another_model(expert, golden_dir):
    audio = (golden_dir / "checkpoint" / "audio_vae" / "config.json").read_text()
    where = _set_config(expert, audio)
    with pytest.raises(CheckpointError, match=f"{where} describes a DAC, not a MOVA video expert.*WanModel"):
        loading.load_component(expert, "video_dit")
    # a diffusers Wan transformer's config (other field names, no _class_name of ours)
    where = _set_config(expert, json.dumps({"num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 36}))
    with pytest.raises(CheckpointError, match=f"{where} does not describe a MOVA video expert.*: it lacks dim, "
                       "num_heads, num_layers, ffn_dim, in_dim, out_dim, patch_size"):
        loading.load_component(expert, "video_dit")


@pytest.mark.parametrize("change,message", [
    ({"dim": "64"}, "dim is '64', expected a positive whole number"),
    ({"num_heads": 0}, "num_heads is 0, expected a positive whole number"),
    ({"patch_size": [1, 2, "2"]}, "patch_size is .*expected a list of positive whole numbers"),
    ({"eps": float("nan")}, "eps is nan, expected a finite number"),
    ({"num_heads": "dim + 1"}, "DiT dim {dim} is not divisible by num_heads {heads}"),
])
def test_config_with_wrong_values(expert, change, message):
    config = json.loads((expert / "config.json").read_text())
    if change.get("num_heads") == "dim + 1":
        change = {"num_heads": config["dim"] + 1}
        message = message.format(dim=config["dim"], heads=config["dim"] + 1)
    config |= change
    where = _set_config(expert, json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{where} does not describe a MOVA video expert.*{message}"):
        loading.load_component(expert, "video_dit")
