"""Speed options: attention backends behind the one entry point, compiled blocks (with block swap, fp8,
LoRA merges and step caching), fp8 matmul (scaled fp8 GEMM; the same quantisation math on the CPU),
and the options reaching the sampler. GPU-only kernels are marked ``gpu``."""

import importlib.util

import pytest
import torch

from comfyui_mova.mova_model.networks import attention as attn
from comfyui_mova.mova_model.sampling import joint
from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.memory.compiled import compilable_regions, compile_blocks, uncompile_blocks
from comfyui_mova.mova_model.lora.load import LoraPatch, merge_lora_
from comfyui_mova.mova_model.memory.offload import disable_block_swap, enable_block_swap
from comfyui_mova.mova_model.networks.ops import FP8_MAX, Fp8Linear, enable_fp8_matmul, quantize_per_token, scaled_fp8_linear
from comfyui_mova.mova_model.weights.quantize import dequantize, quantize_fp8
from comfyui_mova.mova_model.sampling.sampler import SamplingOptions, make_noise, sample
from comfyui_mova.mova_model.memory.speed import apply_speed_options, check_speed_options, uses_fp8_matmul
from mova_testing import load_golden_towers, rel_l2

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
# Measured on the golden tiny model (4 step cases): fp8 matmul vs bf16 weights 0.031-0.051 rel. L2
# (fp8 dequant alone: 0.024-0.041); the bound is the fp8 suite's, 1.6x margin.
FP8_VS_BF16_BOUND = 0.08


def _inputs(golden_tensors, dtype, t_video=850.0, t_audio=850.0):
    g = golden_tensors
    return (torch.cat([g["noise_video"], g["condition"]], dim=1).to(dtype), g["noise_audio"].to(dtype),
            g["context_pos"].to(dtype), torch.tensor([t_video]), torch.tensor([t_audio]))


def _forward(towers, golden_tensors, fps, dtype=torch.float32, expert=0):
    x, a, ctx, tv, ta = _inputs(golden_tensors, dtype)
    with torch.no_grad():
        return joint.joint_forward(towers.video_experts[expert], towers.audio_dit, towers.bridge, x, a, ctx, tv, ta,
                                   fps, dtype=dtype)


def _parts(towers, expert=0):
    return [towers.video_experts[expert], towers.audio_dit, towers.bridge]


# -- attention backends ------------------------------------------------------------------------------

def test_auto_is_sdpa_on_the_cpu_and_gpu_kernels_are_refused_there():
    assert attn.resolve_attention_backend("auto", "cpu") == "sdpa"
    assert attn.resolve_attention_backend("auto", None) == "sdpa"
    for name in ("sdpa_cudnn", "sdpa_flash"):
        with pytest.raises(RuntimeError, match=f"'{name}' runs on CUDA GPUs only.*choose 'auto' or 'sdpa'"):
            attn.resolve_attention_backend(name, "cpu")
    with pytest.raises(ValueError, match="'nope' is unknown; choose one of auto, sdpa"):
        attn.resolve_attention_backend("nope", "cpu")
    with pytest.raises(ValueError, match="'comfy' exists only inside ComfyUI"):
        attn.resolve_attention_backend("comfy", "cpu")


@pytest.mark.parametrize("name, module, hint", [("flash3", "flash_attn_interface", "hopper"),
                                                ("sage", "sageattention", "pip install sageattention")])
def test_a_missing_backend_says_how_to_install_it(name, module, hint):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    assert not attn.is_available(name, "cuda")
    with pytest.raises(RuntimeError, match=f"needs the Python module '{module}'.*{hint}"):
        attn.resolve_attention_backend(name, "cuda")


def test_every_attention_goes_through_the_chosen_backend(golden_dir, golden_tensors, golden_cases):
    """A float64 reference attention registered as a backend: called once per attention of the model
    (self + text cross-attention per block of each tower, both bridge directions per interacting layer)
    and giving SDPA's result."""
    towers = load_golden_towers(golden_dir)
    calls = []

    def reference(q, k, v):
        calls.append(q.shape)
        q64, k64, v64 = (t.double().transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q64 @ k64.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        return (weights @ v64).transpose(1, 2).to(q.dtype)

    attn.register_attention_backend("test_reference", reference)
    ref = _forward(towers, golden_tensors, golden_cases["fps"])
    with attn.use_attention_backend("test_reference", "cpu") as used:
        assert used == "test_reference" and attn.current_attention_backend() == "test_reference"
        out = _forward(towers, golden_tensors, golden_cases["fps"])
    assert attn.current_attention_backend() == "sdpa"  # restored
    expert, audio = towers.video_experts[0].config, towers.audio_dit.config
    interacting = len(towers.bridge.config.interaction_layers)
    assert len(calls) == 2 * expert.num_layers + 2 * audio.num_layers + 2 * interacting
    assert rel_l2(out.video, ref.video) < 1e-6 and rel_l2(out.audio, ref.audio) < 1e-6


def test_sdpa_kernel_names_are_reported():
    names = attn.sdpa_kernel_names("cpu", torch.float32, num_heads=2, head_dim=32)
    assert names and all(isinstance(n, str) for n in names)
    assert any("attention" in n.lower() for n in names)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("name, bound", [("sdpa_cudnn", 1e-2), ("sdpa_flash", 1e-2), ("flash3", 1e-2), ("sage", 3e-2)])
def test_gpu_backends_match_sdpa_within_their_precision(name, bound):
    if not attn.is_available(name, "cuda"):
        pytest.skip(f"{name} is not available here")
    gen = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 4096, 8 * 128, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    ref = attn.attention(q.float(), k.float(), v.float(), 8)
    with attn.use_attention_backend(name, "cuda"):
        out = attn.attention(q, k, v, 8)
    assert rel_l2(out.float(), ref) < bound


# -- compiled blocks ---------------------------------------------------------------------------------

def test_compiled_blocks_equal_eager(golden_dir, golden_tensors, golden_cases):
    towers = load_golden_towers(golden_dir)
    parts = _parts(towers)
    ref = _forward(towers, golden_tensors, golden_cases["fps"])
    count = compile_blocks(*parts)
    expert, audio = parts[0].config, parts[1].config
    assert count == expert.num_layers + audio.num_layers + 2 * len(towers.bridge.config.interaction_layers)
    assert all(r._compiled_call_impl is not None for p in parts for r in compilable_regions(p))
    assert compile_blocks(*parts) == count  # idempotent
    out = _forward(towers, golden_tensors, golden_cases["fps"])
    assert rel_l2(out.video, ref.video) < 1e-5 and rel_l2(out.audio, ref.audio) < 1e-5
    uncompile_blocks(*parts)
    assert all(r._compiled_call_impl is None for p in parts for r in compilable_regions(p))


def test_compiled_blocks_with_fp8_block_swap_and_a_lora_merge(golden_dir, golden_tensors, golden_cases):
    """fp8 weights streamed by block swap through compiled slots give the eager result, and a LoRA merged
    after compiling changes the compiled output exactly as it changes the eager one."""
    fps = golden_cases["fps"]
    towers = load_golden_towers(golden_dir, dtype=torch.float8_e4m3fn)
    high = towers.video_experts[0]
    enable_block_swap(high, "cpu", resident=1)
    eager = _forward(towers, golden_tensors, fps, torch.bfloat16)
    compile_blocks(*_parts(towers))
    swap = high.__dict__["block_swap"]
    assert all(s._compiled_call_impl is not None for s in swap.slots)
    compiled = _forward(towers, golden_tensors, fps, torch.bfloat16)
    assert rel_l2(compiled.video, eager.video) < 2e-2 and rel_l2(compiled.audio, eager.audio) < 2e-2
    disable_block_swap(high)

    plain = load_golden_towers(golden_dir)
    compile_blocks(*_parts(plain))
    before = _forward(plain, golden_tensors, fps)
    dim = plain.video_experts[0].config.dim
    gen = torch.Generator().manual_seed(0)
    patch = LoraPatch(down=torch.randn(4, dim, generator=gen), up=torch.randn(dim, 4, generator=gen) * 0.05, scale=1.0)
    assert merge_lora_(plain.video_experts[0], {"blocks.0.self_attn.q.weight": patch}, 1.0) == []
    merged_compiled = _forward(plain, golden_tensors, fps)
    uncompile_blocks(*_parts(plain))
    merged_eager = _forward(plain, golden_tensors, fps)
    assert rel_l2(merged_compiled.video, before.video) > 1e-3  # the merge reached the compiled blocks
    assert rel_l2(merged_compiled.video, merged_eager.video) < 1e-5


def test_sampler_runs_compiled_with_step_caching(golden_dir, golden_tensors, golden_cases):
    c, g = golden_cases, golden_tensors
    noise = make_noise(g["noise_video"].shape, g["noise_audio"].shape, 3)
    run = lambda **o: sample(load_golden_towers(golden_dir), g["condition"], g["context_pos"], g["context_neg"],  # noqa: E731
                             *noise, SamplingOptions(steps=4, fps=c["fps"], **o), stats=stats)
    stats = {}
    eager = run()
    assert stats["attention"] == "sdpa" and stats["speed"] == []
    compiled = run(compile="blocks", attention="sdpa")
    assert stats["speed"] and "blocks compiled" in stats["speed"][0]
    assert rel_l2(compiled[0], eager[0]) < 1e-5 and rel_l2(compiled[1], eager[1]) < 1e-5
    run(compile="blocks", cache_threshold=0.5)
    assert stats["skipped_steps"] > 0


# -- fp8 matmul ------------------------------------------------------------------------------------

def test_activations_are_quantised_per_token():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 64, generator=gen) * torch.tensor([0.01, 1.0, 30.0, 1e-3, 5.0])[:, None]
    q, scale = quantize_per_token(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (5, 1)
    assert torch.allclose(q.float().abs().amax(dim=1), torch.full((5,), FP8_MAX))  # every row uses the range
    assert rel_l2(q.float() * scale, x) < 0.05


def test_scaled_fp8_linear_is_the_product_of_the_quantised_operands():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(48, 64, generator=gen) * 0.05
    qw, sw = quantize_fp8(w)
    bias = torch.randn(48, generator=gen)
    tokens = torch.randn(1, 64, 7, generator=gen).transpose(1, 2)  # [1, 7, 64], transposed like patchify's
    out = scaled_fp8_linear(tokens, qw, sw, bias)
    qx, sx = quantize_per_token(tokens.reshape(-1, 64))
    expected = (qx.float() * sx) @ dequantize(qw, sw, torch.float32).t() + bias
    assert out.shape == (1, 7, 48)
    assert torch.allclose(out.reshape(-1, 48), expected, rtol=1e-5, atol=1e-5)
    assert rel_l2(out.reshape(-1, 48), tokens.reshape(-1, 64) @ w.t() + bias) < 0.1


def test_fp8_matmul_forward_error_versus_bf16_is_bounded(golden_dir, golden_tensors, golden_cases):
    fps = golden_cases["fps"]
    bf16 = _forward(load_golden_towers(golden_dir, dtype=torch.bfloat16), golden_tensors, fps, torch.bfloat16)
    towers = load_golden_towers(golden_dir, dtype=torch.float8_e4m3fn)
    dequant = _forward(towers, golden_tensors, fps, torch.bfloat16)
    layers = sum(enable_fp8_matmul(p) for p in _parts(towers))
    assert layers == sum(isinstance(m, Fp8Linear) for p in _parts(towers) for m in p.modules())
    matmul = _forward(towers, golden_tensors, fps, torch.bfloat16)
    for name in ("video", "audio"):
        err = rel_l2(getattr(matmul, name), getattr(bf16, name))
        assert 0 < err < FP8_VS_BF16_BOUND, (name, err)
        assert 0 < rel_l2(getattr(matmul, name), getattr(dequant, name)) < FP8_VS_BF16_BOUND


@gpu
@pytest.mark.gpu
def test_gpu_fp8_matmul_equals_the_cpu_math():
    if not torch.cuda.get_device_capability() >= (8, 9):
        pytest.skip("no fp8 tensor cores")
    gen = torch.Generator().manual_seed(2)
    qw, sw = quantize_fp8(torch.randn(256, 512, generator=gen) * 0.05)
    x = torch.randn(64, 512, generator=gen).bfloat16()
    cpu = scaled_fp8_linear(x, qw, sw, None)
    gpu_out = scaled_fp8_linear(x.cuda(), qw.cuda(), sw.cuda(), None)
    assert rel_l2(gpu_out.float().cpu(), cpu.float()) < 1e-2


def test_speed_settings_are_checked_and_fp8_matmul_stays_off_without_fp8_tensor_cores(golden_dir):
    with pytest.raises(ValueError, match="compile 'fast' is not one of off, blocks"):
        check_speed_options("fast", "auto")
    with pytest.raises(ValueError, match="fp8_compute 'int8' is not one of auto, dequant, fp8_matmul"):
        check_speed_options("off", "int8")
    assert not uses_fp8_matmul("blocks", "fp8_matmul", torch.device("cpu"))
    towers = load_golden_towers(golden_dir, dtype=torch.float8_e4m3fn)
    done = apply_speed_options(_parts(towers), "off", "fp8_matmul", "cpu")
    assert done and done[0].startswith("fp8 weights dequantised")
    assert not any(m.fp8_matmul for p in _parts(towers) for m in p.modules() if isinstance(m, Fp8Linear))
    with pytest.raises(RuntimeError, match="'sdpa_cudnn' runs on CUDA GPUs only"):
        sample(towers, torch.zeros(1), torch.zeros(1), None, torch.zeros(1), torch.zeros(1),
               SamplingOptions(attention="sdpa_cudnn", cfg_scale=1.0))
