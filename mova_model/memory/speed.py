"""Speed settings of a sampling run: compiled blocks and how fp8 weights multiply.

``compile``: "off", "blocks" (torch.compile each transformer block, see ``compiled.py``),
"blocks-max-autotune" (the same with inductor's autotuning: slower to compile, sometimes faster) or
"kernels" (only the fused element-wise kernels of ``fused.py``: RMS norm + RoPE and the AdaLN
modulation, a few small graphs that compile in seconds; the blocks stay eager).
``fp8_compute``: "auto" (fp8 matmul where it pays: compiled blocks on a GPU with fp8 tensor cores;
measured on an H200: eager fp8 matmul is slower than dequantising, compiled it is faster),
"dequant" (fp8 weights dequantised to the activations' dtype, the reference path) or "fp8_matmul"
(scaled fp8 GEMM on GPUs with fp8 tensor cores; elsewhere the dequant path).
"""

from __future__ import annotations

import torch
from torch import nn

from ..networks.fused import set_fused_kernels
from ..networks.ops import Fp8Linear, enable_fp8_matmul, fp8_tensor_cores
from .compiled import compile_blocks

COMPILE_MODES = {"off": None, "blocks": "default", "blocks-max-autotune": "max-autotune-no-cudagraphs",
                 "kernels": None}
FP8_COMPUTE = ("auto", "dequant", "fp8_matmul")


def check_speed_options(compile: str, fp8_compute: str) -> None:
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile {compile!r} is not one of {', '.join(COMPILE_MODES)}")
    if fp8_compute not in FP8_COMPUTE:
        raise ValueError(f"fp8_compute {fp8_compute!r} is not one of {', '.join(FP8_COMPUTE)}")


def uses_fp8_matmul(compile: str, fp8_compute: str, device: torch.device) -> bool:
    """Whether fp8 weights multiply in fp8 for these settings on ``device``."""
    if not fp8_tensor_cores(torch.device(device)):
        return False
    return fp8_compute == "fp8_matmul" or (fp8_compute == "auto" and compile.startswith("blocks"))


def apply_speed_options(models: list[nn.Module], compile: str, fp8_compute: str, device) -> list[str]:
    """Set up ``models`` for a run; returns what was done, one short phrase each (for logs)."""
    check_speed_options(compile, fp8_compute)
    done = []
    fp8_layers = sum(isinstance(m, Fp8Linear) and m.scale_weight is not None for model in models for m in model.modules())
    if fp8_layers:
        matmul = uses_fp8_matmul(compile, fp8_compute, device)
        for model in models:
            enable_fp8_matmul(model, matmul)
        done.append(f"fp8 weights {'multiplied in fp8' if matmul else 'dequantised'} ({fp8_layers} layers)")
    set_fused_kernels(compile == "kernels")
    if compile == "kernels":
        done.append("fused kernels compiled (RMS norm + RoPE, modulation)")
    elif compile != "off":
        mode = COMPILE_MODES[compile]
        regions = compile_blocks(*models, mode=None if mode == "default" else mode)
        done.append(f"{regions} blocks compiled ({compile})")
    return done
