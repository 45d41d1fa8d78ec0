"""Damaged or hostile LoRA files stop with a clear error naming the file and the key; a merge that would make
weights non-finite changes nothing."""

import json
import pathlib

import pytest
import torch
from safetensors.torch import save_file

from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.weights.checkpoint import CheckpointError
from comfyui_mova.mova_model.lora.load import merge_lora_, read_lora

MODULE = "video_dit.blocks.0.self_attn.q"


def _pair(rank=2, dim=8, value=0.1):
    return {f"{MODULE}.lora_A.weight": torch.full((rank, dim), value), f"{MODULE}.lora_B.weight": torch.full((dim, rank), value)}


@pytest.mark.parametrize("state,message", [
    (_pair(rank=0), "has rank 0"),
    ({f"{MODULE}.lora_A.weight": torch.tensor(1.0), f"{MODULE}.lora_B.weight": torch.ones(8, 1)},
     r"lora_A.weight is a torch.float32 tensor of shape \(\), not a LoRA matrix"),
    ({f"{MODULE}.lora_A.weight": torch.ones(2, 8, dtype=torch.int64), f"{MODULE}.lora_B.weight": torch.ones(8, 2)},
     "torch.int64 tensor of shape"),
    (_pair(value=float("nan")), "holds NaN or infinite values"),
    (_pair() | {f"{MODULE}.alpha": torch.tensor([1.0, 2.0])}, "alpha is a tensor of 2 values, not one number"),
    (_pair() | {f"{MODULE}.alpha": torch.tensor(float("inf"))}, "alpha is inf, not a finite number"),
])
def test_damaged_factors_are_named(tmp_path, state, message):
    path = tmp_path / "lora.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=f"{path}.*{message}"):
        read_lora(path)


@pytest.mark.parametrize("alpha", ["high", "[1, 2]", "NaN"])
def test_non_numeric_alpha_in_metadata(tmp_path, alpha):
    path = tmp_path / "lora.safetensors"
    save_file(_pair(), str(path), metadata={"alpha": alpha})
    with pytest.raises(CheckpointError, match=f"{path} \\(its settings\\): alpha is .*not a finite number"):
        read_lora(path)


def test_numeric_alpha_in_metadata(tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file(_pair(rank=2), str(path), metadata={"alpha": "1e1"})
    assert read_lora(path).patches["video_dit"]["blocks.0.self_attn.q.weight"].scale == 5.0


def test_damaged_safetensors_lora(tmp_path):
    path = tmp_path / "lora.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}" + b" " * 8)
    with pytest.raises(CheckpointError, match=f"{path}: tensor 'a' has a header entry"):
        read_lora(path)


class _Hostile:
    """Unpickling this would create a file: what a pickle carrying code could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_hostile_lora_config_is_refused(tmp_path):
    torch.save(_pair(), tmp_path / "lora_weights.pt")
    marker = tmp_path / "code_ran"
    torch.save({"rank": 2, "alpha": _Hostile(marker)}, tmp_path / "lora_config.pt")
    with pytest.raises(CheckpointError, match="lora_config.pt could not be read as plain settings.*convert it"):
        read_lora(tmp_path / "lora_weights.pt")
    assert not marker.exists()


@pytest.mark.parametrize("config,message", [
    ([2, 4], "holds a list, not the LoRA settings"),
    ({"rank": 2, "alpha": "eight"}, "alpha is 'eight', not a finite number"),
])
def test_wrong_lora_config(tmp_path, config, message):
    torch.save(_pair(), tmp_path / "lora_weights.pt")
    torch.save(config, tmp_path / "lora_config.pt")
    with pytest.raises(CheckpointError, match=message):
        read_lora(tmp_path / "lora_weights.pt")


def test_wrong_low_resource_layout(tmp_path):
    torch.save({"lora_state_dict": [1, 2], "rank": 2}, tmp_path / "trainer.pt")
    with pytest.raises(CheckpointError, match="its lora_state_dict is a list, not a dict of tensors"):
        read_lora(tmp_path / "trainer.pt")


def test_merge_that_overflows_changes_nothing(golden_dir, tmp_path):
    expert = loading.load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float16, component="video_dit")
    dim = expert.config.dim
    before = {k: v.clone() for k, v in expert.state_dict().items()}
    good = {"video_dit.blocks.0.self_attn.k.lora_A.weight": torch.full((1, dim), 0.01),
            "video_dit.blocks.0.self_attn.k.lora_B.weight": torch.full((dim, 1), 0.01)}
    huge = {"video_dit.blocks.0.self_attn.q.lora_A.weight": torch.full((1, dim), 300.0),
            "video_dit.blocks.0.self_attn.q.lora_B.weight": torch.full((dim, 1), 300.0)}
    save_file(good | huge, str(tmp_path / "huge.safetensors"))
    lora = read_lora(tmp_path / "huge.safetensors")
    with pytest.raises(ValueError, match="blocks.0.self_attn.q.weight at strength 1 gives NaN or infinite weights.*"
                       "torch.float16.*lower the strength, or load the model in bf16 or fp32"):
        merge_lora_(expert, lora.patches["video_dit"], strength=1.0)
    for key, value in expert.state_dict().items():
        assert torch.equal(value, before[key]), key
