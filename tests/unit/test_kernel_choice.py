"""Which attention kernels run where (FlashAttention-3 on Hopper only, SageAttention from compute capability 8.0,
either of FA3's two builds), and the fp8 GEMM's epilogue: the bias joins the float32 accumulator before the one
rounding; activation quantisation as a fused kernel gives the eager result."""

import importlib.util

import pytest
import torch

from comfyui_mova.mova_model.networks import attention as attn
from comfyui_mova.mova_model.networks import fused
from comfyui_mova.mova_model.networks.ops import bias_in_gemm, quantize_per_token, scaled_fp8_linear
from comfyui_mova.mova_model.weights.quantize import dequantize, quantize_fp8


@pytest.mark.parametrize("name, capability, fits", [
    ("flash3", (9, 0), True), ("flash3", (8, 9), False), ("flash3", (10, 0), False), ("flash3", (8, 0), False),
    ("sage", (8, 0), True), ("sage", (9, 0), True), ("sage", (7, 5), False), ("sdpa_cudnn", (7, 5), False),
    ("sdpa", (7, 5), True), ("flash3", None, True)])
def test_kernels_fit_their_gpus(name, capability, fits):
    assert attn.kernel_fits(name, capability) is fits


def test_flash3_is_taken_from_either_build():
    """FA3's 'hopper' build (flash_attn_interface) or the forward-only fa3-fwd wheel (fa3_fwd_interface)."""
    assert attn.FLASH3_MODULES == ("flash_attn_interface", "fa3_fwd_interface")
    if any(importlib.util.find_spec(m) for m in attn.FLASH3_MODULES):
        pytest.skip("a FlashAttention-3 build is installed here")
    with pytest.raises(RuntimeError, match="'flash_attn_interface' or 'fa3_fwd_interface'.*fa3-fwd"):
        attn.resolve_attention_backend("flash3", "cuda")
    assert attn.resolve_attention_backend("auto", "cuda") == "sdpa"


def test_fp8_gemm_adds_the_bias_before_the_one_rounding():
    """bf16 activations: the product and the bias meet in float32 and are rounded to bf16 once (what the
    GPU's GEMM epilogue does), not rounded, added and rounded again."""
    gen = torch.Generator().manual_seed(5)
    qw, sw = quantize_fp8(torch.randn(40, 96, generator=gen) * 0.05)
    bias = (torch.randn(40, generator=gen) * 3).bfloat16()
    x = torch.randn(2, 9, 96, generator=gen).bfloat16()
    out = scaled_fp8_linear(x, qw, sw, bias)
    qx, sx = quantize_per_token(x.reshape(-1, 96))
    accumulator = (qx.float() * sx) @ dequantize(qw, sw, torch.float32).t()
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.reshape(-1, 40), (accumulator + bias.float()).bfloat16())
    assert not bias_in_gemm(torch.device("cpu"))  # the CPU path adds it in float32 itself


def test_fused_quantisation_kernel_equals_the_eager_one():
    gen = torch.Generator().manual_seed(6)
    x = (torch.randn(33, 64, generator=gen) * torch.linspace(0.01, 20, 33)[:, None]).bfloat16()
    q, scale = quantize_per_token(x)
    with fused.use_fused_kernels(True):
        fq, fscale = quantize_per_token(x)
    assert fq.dtype == torch.float8_e4m3fn and torch.equal(fscale, scale)
    assert torch.equal(fq.float(), q.float())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fp8_gemm_with_its_bias_equals_the_cpu_math():
    """On a GPU with fp8 tensor cores the bias goes through _scaled_mm's epilogue where it is taken (or is added
    right after): the result is the CPU's float32 emulation to bf16 rounding."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("no fp8 tensor cores")
    gen = torch.Generator().manual_seed(8)
    qw, sw = quantize_fp8(torch.randn(256, 512, generator=gen) * 0.05)
    bias = (torch.randn(256, generator=gen) * 2).bfloat16()
    x = torch.randn(64, 512, generator=gen).bfloat16()
    cpu = scaled_fp8_linear(x, qw, sw, bias).float()
    gpu = scaled_fp8_linear(x.cuda(), qw.cuda(), sw.cuda(), bias.cuda()).float().cpu()
    assert bias_in_gemm(torch.device("cuda")) in (True, False)
    assert float((gpu - cpu).norm() / cpu.norm()) < 1e-2
