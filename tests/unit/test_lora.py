"""LoRA files of both official trainer layouts and .safetensors: parsing, matching, W + s·(α/r)·B·A."""

import collections

import pytest
import torch
from safetensors.torch import save_file

from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.weights.checkpoint import CheckpointError
from comfyui_mova.mova_model.lora.load import match_patches, merge_lora_, read_lora


@pytest.fixture
def expert(golden_dir):
    return loading.load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float32, component="video_dit")


def _factors(model, module, rank, seed):
    gen = torch.Generator().manual_seed(seed)
    out_f, in_f = model.get_parameter(module + ".weight").shape
    return torch.randn(rank, in_f, generator=gen), torch.randn(out_f, rank, generator=gen)


def _expected(model, module, a, b, alpha, rank, strength):
    return model.get_parameter(module + ".weight") + strength * (alpha / rank) * (b @ a)


MODULES = ("blocks.0.self_attn.q", "blocks.1.cross_attn.o")


def test_accelerate_layout_with_lora_config(expert, tmp_path):
    rank, alpha = 4, 8.0
    state = {}
    for i, module in enumerate(MODULES):
        a, b = _factors(expert, module, rank, i)
        suffix = ".default.weight" if i else ".weight"   # both spellings occur
        state[f"video_dit.{module}.lora_A{suffix}"], state[f"video_dit.{module}.lora_B{suffix}"] = a, b
    torch.save(state, tmp_path / "lora_weights.pt")
    torch.save({"rank": rank, "alpha": alpha, "target_modules": ["q", "o"]}, tmp_path / "lora_config.pt")
    lora = read_lora(tmp_path / "lora_weights.pt")
    assert set(lora.patches["video_dit"]) == {m + ".weight" for m in MODULES}
    assert lora.unknown_keys == []
    expected = {m: _expected(expert, m, state[f"video_dit.{m}.lora_A" + (".default.weight" if i else ".weight")],
                             state[f"video_dit.{m}.lora_B" + (".default.weight" if i else ".weight")], alpha, rank, 0.7)
                for i, m in enumerate(MODULES)}
    assert merge_lora_(expert, lora.patches["video_dit"], strength=0.7) == []
    for m in MODULES:
        assert torch.allclose(expert.get_parameter(m + ".weight"), expected[m], atol=1e-5)


def test_low_resource_layout_alpha_defaults_to_rank(expert, tmp_path):
    rank = 3
    a, b = _factors(expert, MODULES[0], rank, 5)
    torch.save({"lora_state_dict": {f"video_dit_2.{MODULES[0]}.lora_A": a, f"video_dit_2.{MODULES[0]}.lora_B": b},
                "rank": rank}, tmp_path / "low.pt")
    lora = read_lora(tmp_path / "low.pt")
    patch = lora.patches["video_dit_2"][MODULES[0] + ".weight"]
    assert patch.scale == 1.0 and lora.patches["video_dit"] == {}
    expected = _expected(expert, MODULES[0], a, b, rank, rank, 1.5)
    merge_lora_(expert, {MODULES[0] + ".weight": patch}, 1.5)
    assert torch.allclose(expert.get_parameter(MODULES[0] + ".weight"), expected, atol=1e-5)


def test_safetensors_with_metadata_alpha_and_unknown_keys(expert, tmp_path):
    a, b = _factors(expert, MODULES[0], 2, 1)
    save_file({f"audio_dit.{MODULES[0]}.lora_A.weight": a, f"audio_dit.{MODULES[0]}.lora_B.weight": b,
               "text_encoder.layer.0.lora_A.weight": torch.zeros(2, 4),
               f"dual_tower_bridge.{MODULES[1]}.lora_A.weight": torch.zeros(2, 4)},
              str(tmp_path / "l.safetensors"), metadata={"alpha": "8"})
    lora = read_lora(tmp_path / "l.safetensors")
    assert lora.patches["audio_dit"][MODULES[0] + ".weight"].scale == 4.0
    assert lora.unknown_keys == ["dual_tower_bridge.blocks.1.cross_attn.o.lora_A (its partner is missing)",
                                 "text_encoder.layer.0.lora_A.weight"]


def test_non_matching_patches_are_reported(expert, tmp_path):
    a, b = _factors(expert, MODULES[0], 2, 1)
    state = {}
    for module in ("blocks.0.self_attn.q", "blocks.0.ffn.0", "blocks.77.self_attn.q"):
        state[f"video_dit.{module}.lora_A.weight"], state[f"video_dit.{module}.lora_B.weight"] = a.clone(), b.clone()
    save_file(state, str(tmp_path / "l.safetensors"))
    patches = read_lora(tmp_path / "l.safetensors").patches["video_dit"]
    shapes = {k: tuple(p.shape) for k, p in expert.named_parameters()}
    fits, misses = match_patches(patches, shapes)
    assert list(fits) == ["blocks.0.self_attn.q.weight"]
    assert sorted(misses) == [
        f"blocks.0.ffn.0.weight (LoRA {b.shape[0]}x{a.shape[1]}, weight {shapes['blocks.0.ffn.0.weight']})",
        "blocks.77.self_attn.q.weight (no such weight)"]


def test_pickles_with_code_are_refused(tmp_path):
    torch.save({"x": collections.OrderedDict(a=torch.zeros(1)), "obj": object()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"only weights-only \.pt files"):
        read_lora(tmp_path / "evil.pt")


def test_merge_into_fp8_weights_requantises(golden_dir, tmp_path):
    from comfyui_mova.mova_model.weights.quantize import dequantize
    fp8 = loading.load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float8_e4m3fn, component="video_dit")
    layer = fp8.get_submodule(MODULES[0])
    before = dequantize(layer.weight, layer.scale_weight, torch.float32)
    a, b = _factors(fp8, MODULES[0], 2, 3)
    a, b = a * 0.1, b * 0.1
    torch.save({"lora_state_dict": {f"video_dit.{MODULES[0]}.lora_A": a, f"video_dit.{MODULES[0]}.lora_B": b},
                "rank": 2, "alpha": 2}, tmp_path / "l.pt")
    merge_lora_(fp8, read_lora(tmp_path / "l.pt").patches["video_dit"], strength=1.0)
    after = dequantize(layer.weight, layer.scale_weight, torch.float32)
    assert layer.weight.dtype == torch.float8_e4m3fn
    expected = before + b @ a
    assert (after - expected).norm() / expected.norm() < 0.05  # fp8 rounding
    assert (after - before).norm() > 0.5 * (b @ a).norm()
