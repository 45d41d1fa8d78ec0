"""Shared random weights for the side-by-side benchmark (benchmarks/vs_official.py): one state dict built once on
the device, whose tensors both sides take (nothing copied); the pack's parts on it; the inputs; the FLOPs of a step.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mova_model.sampling import sizes  # noqa: E402
from mova_model.networks.bridge import DualTowerBridge  # noqa: E402
from mova_model.configs import DACConfig  # noqa: E402
from mova_model.networks.dit import WanDiT  # noqa: E402
from mova_model.networks.ops import enable_fp8_matmul  # noqa: E402
from mova_model.weights.quantize import quantize_fp8_  # noqa: E402

BF16 = torch.bfloat16


# -- sizes and FLOPs -------------------------------------------------------------------------------------

def step_flops(config, video_tokens: int, audio_tokens: int, text_tokens: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one CFG step = two joint forwards: every GEMM and attention product of
    the blocks and bridge, plus text/patch embeddings and heads (5.53e15 for 360p, 193 frames)."""
    def tower(c, n):
        d, f = c.dim, c.ffn_dim
        per_block = (4 * 2 * n * d * d + 4 * n * n * d            # self-attention: q k v o, QK^T and PV
                     + 2 * 2 * n * d * d + 2 * 2 * text_tokens * d * d + 4 * n * text_tokens * d  # cross-attention
                     + 2 * 2 * n * d * f)                          # FFN
        extras = 2 * text_tokens * (c.text_dim * d + d * d) + 2 * n * d * (c.in_dim + c.out_dim) * math.prod(c.patch_size)
        return c.num_layers * per_block + extras

    v, a, b = config.video, config.audio, config.bridge
    nv, na, dv, da = video_tokens, audio_tokens, v.dim, a.dim
    bridge = len(b.interaction_layers) * (
        2 * 2 * nv * dv * dv + 2 * 2 * na * da * dv + 4 * nv * na * dv     # audio -> video
        + 2 * 2 * na * da * da + 2 * 2 * nv * dv * da + 4 * na * nv * da)  # video -> audio
    return 2.0 * (tower(v, nv) + tower(a, na) + bridge)


# -- weights -------------------------------------------------------------------------------------------

def random_state(module: torch.nn.Module, device, gen: torch.Generator) -> dict:
    """Random bf16 tensors for every parameter of ``module`` (built on the meta device): matrices N(0, 1/fan_in),
    norm scales 1 + N(0, 0.1^2), biases N(0, 0.02^2), modulation tables N(0, 1/dim) (as the official init)."""
    state = {}
    for name, p in module.state_dict(keep_vars=True).items():
        t = torch.empty(p.shape, device=device, dtype=torch.float32)
        if p.dim() >= 2 and "modulation" not in name:
            t.normal_(0.0, 1.0 / math.sqrt(math.prod(p.shape[1:])), generator=gen)
        elif "modulation" in name:
            t.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]), generator=gen)
        elif "norm" in name:
            t.normal_(1.0, 0.1, generator=gen)
        else:
            t.normal_(0.0, 0.02, generator=gen)
        state[name] = t.to(BF16)
        del t
    return state


def pack_parts(config, states: dict, fp8: bool = False) -> dict:
    """The pack's video expert, audio DiT and bridge given the tensors of ``states`` (shared; with ``fp8``
    the blocks' Linear weights are quantised into new fp8 tensors, the shared bf16 ones are untouched)."""
    with torch.device("meta"):
        parts = {"video": WanDiT(config.video, dtype=BF16), "audio": WanDiT(config.audio, dtype=BF16),
                 "bridge": DualTowerBridge(config.bridge, dtype=BF16)}
    for name, module in parts.items():
        module.load_state_dict(states[name], strict=True, assign=True)
        module.eval().requires_grad_(False)
        if fp8:
            quantize_fp8_(module)
            enable_fp8_matmul(module, True)
    return parts


def build_states(config, device, seed: int) -> dict:
    gen = torch.Generator(device).manual_seed(seed)
    with torch.device("meta"):
        shapes = {"video": WanDiT(config.video), "audio": WanDiT(config.audio), "bridge": DualTowerBridge(config.bridge)}
    return {name: random_state(m, device, gen) for name, m in shapes.items()}


def inputs(config, device, height, width, frames, fps, text_tokens, dtype=BF16, seed=1):
    shapes = sizes.latent_shapes(1, height, width, frames, fps, DACConfig(), config.audio.in_dim)
    gen = torch.Generator(device).manual_seed(seed)
    make = lambda *s: torch.randn(*s, device=device, generator=gen).to(dtype)  # noqa: E731
    x = make(1, 36, *shapes.video[2:])
    a = make(*shapes.audio)
    contexts = [make(1, text_tokens, config.video.text_dim) for _ in range(2)]
    video_tokens = shapes.video[2] * (shapes.video[3] // 2) * (shapes.video[4] // 2)
    return x, a, contexts, video_tokens, shapes.audio[2]


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def pack_float32(config, states):
    with torch.device("meta"):
        parts = {"video": WanDiT(config.video), "audio": WanDiT(config.audio), "bridge": DualTowerBridge(config.bridge)}
    for name, module in parts.items():
        module.load_state_dict(states[name], strict=True, assign=True)
        module.eval().requires_grad_(False)
    return parts
