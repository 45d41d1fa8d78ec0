"""Seconds per sampling step (CFG on), peak VRAM and peak host RAM of MOVA's memory modes
(a script, not a test). Random weights: speed and memory do not depend on their values.

    # GPU, full-size MOVA (H200): every mode at 360p and 720p, 193 frames
    python benchmarks/memory_modes.py --device cuda --size full --res 360p 720p
    # CPU, mid-size config, the same modes (swapping half the blocks)
    python benchmarks/memory_modes.py --device cpu --size mid --frames 17 --resident 4

Modes: bf16 (both experts resident, bf16), fp8 (weights stored fp8 e4m3fn, computed in bf16),
fp8-swap-24 / fp8-swap-16 (fp8 with block swap inside a 24 / 16 GiB VRAM budget, set with
torch.cuda.set_per_process_memory_fraction; on the CPU the budget only sets the resident blocks).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mova_model.sampling import sizes  # noqa: E402
from mova_model.networks.bridge import DualTowerBridge  # noqa: E402
from mova_model.configs import MOVA_360P, BridgeConfig, DACConfig, DiTConfig, MovaConfig  # noqa: E402
from mova_model.networks.dit import WanDiT  # noqa: E402
from mova_model.sampling.joint import joint_forward  # noqa: E402
from mova_model.memory.offload import enable_block_swap  # noqa: E402
from mova_model.weights.quantize import quantize_fp8_  # noqa: E402

GIB = 1024 ** 3
RESOLUTIONS = {"360p": (352, 640), "720p": (720, 1280)}


def mid_config() -> MovaConfig:
    video = DiTConfig(dim=512, num_heads=4, num_layers=8, ffn_dim=2048, in_dim=36, out_dim=16, patch_size=(1, 2, 2))
    audio = DiTConfig(dim=256, num_heads=2, num_layers=6, ffn_dim=1024, in_dim=128, out_dim=128, patch_size=(1,))
    bridge = BridgeConfig(visual_layers=8, audio_layers=6, visual_hidden_dim=512, audio_hidden_dim=256)
    return MovaConfig(video=video, audio=audio, bridge=bridge)


def host_rss_peak() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_host_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def random_(model: torch.nn.Module) -> torch.nn.Module:
    """Fill every weight with N(0, 0.02) in place (on the model's device)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02) if p.is_floating_point() else None
    return model.eval().requires_grad_(False)


def build(config: MovaConfig, mode: str, device: torch.device):
    """Random experts (high, low), audio DiT and bridge for ``mode`` on ``device``."""
    dtype = torch.bfloat16
    parts = [WanDiT(config.video, device=device, dtype=dtype) for _ in range(2)]
    parts += [WanDiT(config.audio, device=device, dtype=dtype), DualTowerBridge(config.bridge, device=device, dtype=dtype)]
    for p in parts:
        random_(p)
        if mode != "bf16":
            quantize_fp8_(p)
    return parts


def weight_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def resident_blocks(expert, others_bytes: int, budget: int, reserve: int) -> int:
    """How many blocks of the active expert fit beside everything else inside ``budget``."""
    block = weight_bytes(expert.blocks[0])
    outside = weight_bytes(expert) - block * len(expert.blocks)
    free = budget - reserve - others_bytes - outside - 2 * block  # two swap slots
    return max(0, min(len(expert.blocks), free // block))


def run_mode(config, mode, res, frames, fps, device, steps, reserve_gib, force_resident=None):
    h, w = res
    shapes = sizes.latent_shapes(1, h, w, frames, fps, DACConfig(), config.audio.in_dim)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    reset_host_peak()
    high, low, audio_dit, bridge = build(config, mode, device)  # random init is fastest on the device
    note = ""
    if mode.startswith("fp8-swap"):
        budget = int(mode.rsplit("-", 1)[1]) * GIB
        low.to("cpu")  # idle until the switch: host memory only
        others = weight_bytes(audio_dit) + weight_bytes(bridge)
        resident = resident_blocks(high, others, budget, int(reserve_gib * GIB))
        if force_resident is not None:
            resident = force_resident
        enable_block_swap(high, device, resident=resident)  # the timed steps use the high-noise expert
        note = f"{resident}/{len(high.blocks)} blocks resident"
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(budget / torch.cuda.get_device_properties(device).total_memory)
    x = torch.randn(1, 36, *shapes.video[2:], device=device, dtype=torch.bfloat16)
    a = torch.randn(shapes.audio, device=device, dtype=torch.bfloat16)
    pos = torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16)
    neg = torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16)
    t = torch.tensor([950.0], device=device)

    def step():
        with torch.no_grad():
            for ctx in (pos, neg):  # CFG: two passes per step
                joint_forward(high, audio_dit, bridge, x, a, ctx, t, t, fps, dtype=torch.bfloat16)
        if device.type == "cuda":
            torch.cuda.synchronize()

    try:
        step()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step()
        per_step = (time.perf_counter() - start) / steps
        vram = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else float("nan")
        result = f"{per_step:8.2f} s/step  VRAM peak {vram:6.1f} GiB  host RSS peak {host_rss_peak() / GIB:6.1f} GiB"
    except torch.OutOfMemoryError as exc:
        result = f"out of memory ({str(exc).splitlines()[0][:80]})"
    finally:
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0)
    tokens = shapes.video[2] * (shapes.video[3] // 2) * (shapes.video[4] // 2)
    print(f"{mode:12s} {h}x{w} {frames}f ({tokens} video tokens): {result}  {note}", flush=True)
    del high, low, audio_dit, bridge


def sdpa_backend(device: torch.device) -> str:
    """Which kernel SDPA runs for a bf16 attention of MOVA's head size (from the profiler's kernel names)."""
    if device.type != "cuda":
        return "cpu (no CUDA kernels)"
    q = torch.randn(1, 40, 4096, 128, device=device, dtype=torch.bfloat16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages() if any(s in e.key.lower() for s in ("flash", "fmha", "cudnn", "attention", "efficient"))}
    return ", ".join(sorted(names)) or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=["full", "mid"], default="full")
    parser.add_argument("--res", nargs="+", default=["360p"], choices=sorted(RESOLUTIONS))
    parser.add_argument("--frames", type=int, default=193)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--modes", nargs="+", default=["bf16", "fp8", "fp8-swap-24", "fp8-swap-16"])
    parser.add_argument("--reserve-gib", type=float, default=8.0, help="VRAM kept for activations in swap modes")
    parser.add_argument("--resident", type=int, default=None,
                        help="blocks kept on the device in swap modes (default: as many as the budget allows)")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = MOVA_360P if args.size == "full" else mid_config()
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {torch.get_num_threads()} threads"))
    print(f"SDPA kernel: {sdpa_backend(device)}")
    for res in args.res:
        for mode in args.modes:
            run_mode(config, mode, RESOLUTIONS[res], args.frames, args.fps, device, args.steps, args.reserve_gib,
                     args.resident)


if __name__ == "__main__":
    main()
