"""GGUF parts at work: a sampling run against bf16, LoRA on a quantised expert against LoRA on its dequantised
weights, block swap and compiled blocks on quantised experts against the resident eager run."""

import pytest
import torch

from comfyui_mova.mova_model import convert
from comfyui_mova.mova_model.lora.load import LoraPatch, merge_lora_
from comfyui_mova.mova_model.memory.compiled import compile_blocks, uncompile_blocks
from comfyui_mova.mova_model.memory.offload import disable_block_swap, enable_block_swap
from comfyui_mova.mova_model.sampling import joint, sampler
from comfyui_mova.mova_model.gguf.layers import quantized_layers
from comfyui_mova.mova_model.weights.loading import load_component
from gguf_files import widened_release
from mova_testing import rel_l2

FILES = {"high": ("video_dit", "video_dit_high"), "low": ("video_dit", "video_dit_low"),
         "audio": ("audio_dit", "audio_dit"), "bridge": ("dual_tower_bridge", "dual_tower_bridge")}
FOLDERS = {"high": "video_dit", "low": "video_dit_2", "audio": "audio_dit", "bridge": "dual_tower_bridge"}
# rel. L2 of one sampling run (golden sizes and steps, cfg 5) with every DiT and the bridge from the .gguf files
# against the same run in bf16, on the golden release widened to K-block widths (tests/support/gguf_files.py).
# Measured (video / audio): Q8_0 0.0073 / 0.0071, Q6_K 0.010 / 0.0098, Q5_K 0.014 / 0.016, Q4_K 0.026 / 0.021;
# the bounds leave about 2x.
SAMPLING_BOUND = {"gguf_q8_0": 0.015, "gguf_q6_k": 0.02, "gguf_q5_k": 0.032, "gguf_q4_k": 0.05}


@pytest.fixture(scope="module")
def release(golden_dir, tmp_path_factory):
    return widened_release(golden_dir, tmp_path_factory.mktemp("wide"))


@pytest.fixture(scope="module")
def gguf_folder(release, tmp_path_factory):
    """{format: folder} of the widened release converted to each GGUF type."""
    out = {}
    for fmt in SAMPLING_BOUND:
        folder = tmp_path_factory.mktemp(fmt)
        assert convert.main([str(release), str(folder), "--prefix", "t", "--dtype", fmt, "--components", "high",
                             "low", "audio_dit", "bridge"]) == 0
        out[fmt] = folder
    return out


def _gguf_towers(folder, fmt, dtype=None):
    tag = fmt[len("gguf_"):]
    load = lambda part: load_component(folder / f"t_{FILES[part][1]}_{tag}.gguf", FILES[part][0], dtype=dtype)  # noqa: E731
    return sampler.MovaTowers([load("high"), load("low")], load("audio"), load("bridge"))


def _source_towers(release, dtype):
    load = lambda part: load_component(release, FILES[part][0], dtype=dtype, component=FOLDERS[part])  # noqa: E731
    return sampler.MovaTowers([load("high"), load("low")], load("audio"), load("bridge"))


def _sample(towers, g, c):
    options = sampler.SamplingOptions(steps=c["sample_steps"], cfg_scale=5.0, fps=c["fps"],
                                      boundary_ratio=c["boundary_ratio"])
    return sampler.sample(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"],
                          g["noise_audio"], options)


def _forward(towers, g, fps, expert=0):
    x = torch.cat([g["noise_video"], g["condition"]], dim=1).bfloat16()
    t = torch.tensor([850.0])
    with torch.no_grad():
        return joint.joint_forward(towers.video_experts[expert], towers.audio_dit, towers.bridge, x,
                                   g["noise_audio"].bfloat16(), g["context_pos"].bfloat16(), t, t, fps,
                                   dtype=torch.bfloat16)


def test_sampling_with_gguf_parts_is_close_to_bf16(release, gguf_folder, golden_tensors, golden_cases):
    video, audio = _sample(_source_towers(release, torch.bfloat16), golden_tensors, golden_cases)
    errors = {}
    for fmt, bound in SAMPLING_BOUND.items():
        towers = _gguf_towers(gguf_folder[fmt], fmt)
        assert all(quantized_layers(m) for m in (*towers.video_experts, towers.audio_dit, towers.bridge))
        out_video, out_audio = _sample(towers, golden_tensors, golden_cases)
        errors[fmt] = (rel_l2(out_video.float(), video.float()), rel_l2(out_audio.float(), audio.float()))
        assert errors[fmt][0] < bound and errors[fmt][1] < bound, errors
    # fewer bits, larger error
    assert errors["gguf_q8_0"][0] < errors["gguf_q6_k"][0] < errors["gguf_q4_k"][0], errors


def _lora(model, seed=0, rank=4):
    """A random LoRA on a few of the expert's quantised weights and one float weight (the text embedding)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {f"{n}.weight": m.quant_shape for n, m in quantized_layers(model).items()}
    keys = sorted(shapes)[:6]
    shapes["text_embedding.0.weight"] = tuple(model.text_embedding[0].weight.shape)
    keys.append("text_embedding.0.weight")
    return {k: LoraPatch(down=torch.randn(rank, shapes[k][1], generator=gen),
                         up=torch.randn(shapes[k][0], rank, generator=gen) * 0.05, scale=0.5) for k in keys}


def test_lora_on_a_gguf_expert_equals_lora_on_its_dequantised_weights(gguf_folder, golden_tensors, golden_cases):
    fmt, fps = "gguf_q4_k", golden_cases["fps"]
    quantized = _gguf_towers(gguf_folder[fmt], fmt)
    plain = _gguf_towers(gguf_folder[fmt], fmt, dtype=torch.bfloat16)  # the same file dequantised into bf16
    assert not quantized_layers(plain.video_experts[0])
    before = _forward(quantized, golden_tensors, fps)
    assert torch.equal(before.video, _forward(plain, golden_tensors, fps).video)
    patches = _lora(quantized.video_experts[0])
    bytes_before = {n: m.weight.data.clone() for n, m in quantized_layers(quantized.video_experts[0]).items()}
    assert merge_lora_(quantized.video_experts[0], patches, 0.8) == []
    assert merge_lora_(plain.video_experts[0], patches, 0.8) == []
    after = _forward(quantized, golden_tensors, fps)
    assert rel_l2(after.video.float(), before.video.float()) > 1e-3  # the LoRA took effect
    assert torch.equal(after.video, _forward(plain, golden_tensors, fps).video)
    assert torch.equal(after.audio, _forward(plain, golden_tensors, fps).audio)
    # the quantised bytes are untouched: the update is applied in each forward
    assert all(torch.equal(m.weight.data, bytes_before[n]) for n, m in quantized_layers(quantized.video_experts[0]).items())


@pytest.mark.parametrize("resident", [0, 1])
def test_block_swap_on_gguf_experts_equals_resident(gguf_folder, golden_tensors, golden_cases, resident):
    fmt, fps = "gguf_q6_k", golden_cases["fps"]
    towers = _gguf_towers(gguf_folder[fmt], fmt)
    merge_lora_(towers.video_experts[0], _lora(towers.video_experts[0]), 1.0)  # the LoRA travels with the blocks
    ref = _forward(towers, golden_tensors, fps)
    enable_block_swap(towers.video_experts[0], "cpu", resident=resident)
    enable_block_swap(towers.audio_dit, "cpu", resident=0)
    for _ in range(2):  # slots reused
        out = _forward(towers, golden_tensors, fps)
        assert torch.equal(out.video, ref.video) and torch.equal(out.audio, ref.audio)
    disable_block_swap(towers.video_experts[0])
    disable_block_swap(towers.audio_dit)


def test_compiled_gguf_blocks_equal_eager(gguf_folder, golden_tensors, golden_cases):
    fmt, fps = "gguf_q5_k", golden_cases["fps"]
    towers = _gguf_towers(gguf_folder[fmt], fmt)
    parts = [towers.video_experts[0], towers.audio_dit, towers.bridge]
    eager = _forward(towers, golden_tensors, fps)
    assert compile_blocks(*parts) > 0
    compiled = _forward(towers, golden_tensors, fps)
    uncompile_blocks(*parts)
    assert rel_l2(compiled.video.float(), eager.video.float()) < 1e-2
    assert rel_l2(compiled.audio.float(), eager.audio.float()) < 1e-2
