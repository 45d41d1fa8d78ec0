"""The ``operations`` namespaces: plain torch.nn layers (``torch_ops``) and fp8-weight layers (``fp8_ops``).

Every network takes ``operations=`` (ComfyUI passes ``comfy.ops.manual_cast`` and friends,
which have the same class names and constructor arguments) so that the host can swap in
layers that cast stored weights or stream them in low-VRAM mode.
"""

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

torch_ops = SimpleNamespace(
    Linear=nn.Linear,
    Conv1d=nn.Conv1d,
    Conv3d=nn.Conv3d,
    ConvTranspose1d=nn.ConvTranspose1d,
    LayerNorm=nn.LayerNorm,
)


class Fp8Linear(nn.Linear):
    """nn.Linear whose ``weight`` may be stored in fp8 with a float32 per-tensor ``scale_weight``
    (ComfyUI's scaled-fp8 keys ``X.weight`` + ``X.scale_weight``); computes in the input's dtype:
    x [..., in] -> [..., out] with W = weight * scale_weight cast to x.dtype.

    ``scale_weight`` is None (no state-dict key) until the loader makes the layer an fp8 layer.
    With ``fp8_matmul`` set (``enable_fp8_matmul``) an e4m3fn weight multiplies in fp8 (see
    ``scaled_fp8_linear``) instead of being dequantised.
    """

    fp8_matmul = False

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_parameter("scale_weight", None)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as ``dtype`` [out, in]: fp8 values times the scale, rounded once to ``dtype``."""
        weight = self.weight.to(dtype)
        if self.scale_weight is None:
            return weight
        return weight * self.scale_weight.to(device=weight.device, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if self.fp8_matmul and self.scale_weight is not None and weight.dtype == torch.float8_e4m3fn:
            return scaled_fp8_linear(x, weight, self.scale_weight, self.bias)
        if self.scale_weight is not None or weight.dtype != x.dtype:
            weight = self.dequantized_weight(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)


def is_linear(module: nn.Module) -> bool:
    """A Linear layer of any operations family: torch's nn.Linear and its subclasses, and hosts' layers that
    are not (ComfyUI's mixed_precision_ops Linear is a plain Module with in/out_features and a weight)."""
    return isinstance(module, nn.Linear) or (
        hasattr(module, "in_features") and hasattr(module, "out_features") and hasattr(module, "weight"))


FP8_MAX = 448.0  # largest float8_e4m3fn value


_FP8_GPUS: dict[int, bool] = {}  # CUDA device index -> has fp8 tensor cores (filled on first use)
_BIAS_IN_GEMM: dict[int, bool] = {}  # CUDA device index -> _scaled_mm takes the bias with row-wise scales


def fp8_tensor_cores(device: torch.device) -> bool:
    """True on CUDA GPUs with fp8 tensor cores (compute capability 8.9: Ada, 9.0: Hopper, and later)."""
    if device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _FP8_GPUS:
        _FP8_GPUS[index] = torch.cuda.get_device_capability(index) >= (8, 9)
    return _FP8_GPUS[index]


def bias_in_gemm(device: torch.device) -> bool:
    """True where ``torch._scaled_mm`` adds a bf16 bias in its epilogue with row-wise scales (probed once per
    GPU, outside any compiled region: ``enable_fp8_matmul`` asks first)."""
    if not fp8_tensor_cores(device):
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _BIAS_IN_GEMM:
        a = torch.ones(16, 32, device=device).to(torch.float8_e4m3fn)
        b = torch.ones(16, 32, device=device).to(torch.float8_e4m3fn)
        ones = torch.ones(16, 1, device=device)
        try:
            out = torch._scaled_mm(a, b.t(), scale_a=ones, scale_b=ones.t().contiguous(), out_dtype=torch.bfloat16,
                                   bias=torch.full((16,), 2.0, device=device, dtype=torch.bfloat16))
            _BIAS_IN_GEMM[index] = bool((out.float() == 34.0).all())
        except RuntimeError:
            _BIAS_IN_GEMM[index] = False
    return _BIAS_IN_GEMM[index]


def _quantize_math(x: torch.Tensor):
    x = x.float()  # one float32 copy serves both passes (a bf16 amax also trips inductor's CPU codegen)
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    q = (x / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def quantize_per_token(x: torch.Tensor):
    """x [M, K] -> (q [M, K] float8_e4m3fn, scale [M, 1] float32) with x ~= q * scale, one scale per row.
    With the fused kernels on (``compile="kernels"``) one generated kernel per call; inside compiled blocks
    inductor fuses it into the op that produced x."""
    from .fused import fused_kernels_enabled, run_kernel

    if fused_kernels_enabled() and not torch.compiler.is_compiling():
        return run_kernel("quantize_per_token", _quantize_math, x)
    return _quantize_math(x)


def scaled_fp8_linear(x: torch.Tensor, weight: torch.Tensor, scale_weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] @ (weight * scale_weight).T + bias in x's dtype, with the activations quantised to
    e4m3fn per token. On GPUs with fp8 tensor cores the product is one ``torch._scaled_mm`` (fp8
    operands, float32 accumulation); elsewhere the same quantised values are multiplied in float32,
    so the CPU computes the same function (up to accumulation order). The bias is added to the float32
    accumulator before the one rounding to x's dtype (inside the GEMM's epilogue where the GPU allows it)."""
    shape = x.shape
    # cuBLASLt takes only row-major activations (a token stream can arrive transposed from patchify)
    q, scale_x = quantize_per_token(x.reshape(-1, shape[-1]).contiguous())
    out_features = weight.shape[0]
    scale_w = scale_weight.to(device=x.device, dtype=torch.float32).reshape(1, 1).expand(1, out_features)
    if fp8_tensor_cores(x.device) and x.dtype in (torch.bfloat16, torch.float16):
        fused_bias = bias is not None and x.dtype == torch.bfloat16 and bias_in_gemm(x.device)
        out = torch._scaled_mm(q, weight.t(), scale_a=scale_x, scale_b=scale_w.contiguous(), out_dtype=x.dtype,
                               bias=bias.to(x.dtype) if fused_bias else None)
        if bias is not None and not fused_bias:
            out = out + bias.to(out.dtype)
    else:
        out = (q.float() * scale_x) @ weight.float().t() * scale_w
        if bias is not None:
            out = out + bias.float()
        out = out.to(x.dtype)
    return out.reshape(*shape[:-1], out_features)


def enable_fp8_matmul(model: nn.Module, enabled: bool = True) -> int:
    """Let every fp8 Linear of ``model`` multiply in fp8 (``enabled``) or dequantise to the activations'
    dtype (the default); returns how many layers it set."""
    layers = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    for tensor in model.parameters():
        if enabled:  # learn the device's abilities outside any compiled region
            fp8_tensor_cores(tensor.device)
            bias_in_gemm(tensor.device)
        break
    for layer in layers:
        layer.fp8_matmul = enabled
    return len(layers)


fp8_ops = SimpleNamespace(
    Linear=Fp8Linear,
    Conv1d=nn.Conv1d,
    Conv3d=nn.Conv3d,
    ConvTranspose1d=nn.ConvTranspose1d,
    LayerNorm=nn.LayerNorm,
)
