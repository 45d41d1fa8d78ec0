"""CPU benchmark of the MOVA core on a mid-size random model (a script, not a test).

Times one joint forward and one full sampling step (CFG on: two passes), and measures the peak
resident memory of a fresh process that loads a sharded checkpoint of the video expert.

    python benchmarks/cpu_core.py [--dim 512 --layers 8 --height 352 --width 640 --frames 17]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mova_model.sampling import sizes  # noqa: E402
from mova_model.networks.bridge import DualTowerBridge  # noqa: E402
from mova_model.configs import BridgeConfig, DACConfig, DiTConfig, config_to_dict  # noqa: E402
from mova_model.networks.dit import WanDiT  # noqa: E402
from mova_model.sampling.joint import joint_forward  # noqa: E402
from mova_model.sampling.sampler import MovaTowers, SamplingOptions, sample  # noqa: E402


def build(args):
    video_cfg = DiTConfig(dim=args.dim, num_heads=args.dim // 128, num_layers=args.layers, ffn_dim=4 * args.dim,
                          in_dim=36, out_dim=16, patch_size=(1, 2, 2))
    audio_cfg = DiTConfig(dim=args.dim // 2, num_heads=max(1, args.dim // 256), num_layers=args.layers,
                          ffn_dim=2 * args.dim, in_dim=128, out_dim=128, patch_size=(1,))
    bridge_cfg = BridgeConfig(visual_layers=args.layers, audio_layers=args.layers,
                              visual_hidden_dim=video_cfg.dim, audio_hidden_dim=audio_cfg.dim)
    torch.manual_seed(0)
    towers = [WanDiT(video_cfg), WanDiT(audio_cfg), DualTowerBridge(bridge_cfg)]
    for model in towers:
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.02)
        model.eval().requires_grad_(False)
    return towers


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def write_sharded(model, folder: Path, shards: int) -> int:
    """Write the model as a HF-style sharded component folder; returns its weight bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = sorted(state)
    weight_map, total = {}, 0
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i::shards]}
        save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
        total += sum(v.numel() * v.element_size() for v in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(config_to_dict(model.config)))
    return total


# Linux: VmHWM is the peak resident set; writing 5 to clear_refs resets it to the current RSS.
LOAD_CHILD = """
import sys, torch
sys.path.insert(0, {root!r})
from mova_model.weights.loading import load_component
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
model = load_component({folder!r}, "video_dit", dtype=torch.float32)
total = sum(float(p.double().sum()) for p in model.parameters())  # touch every weight: all resident now
print(base, status("VmHWM:"))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    video_dit, audio_dit, bridge = build(args)
    shapes = sizes.latent_shapes(1, args.height, args.width, args.frames, args.fps, DACConfig(), 128)
    video_tokens = shapes.video[2] * (shapes.video[3] // 2) * (shapes.video[4] // 2)
    x = torch.randn(shapes.video[0], 36, *shapes.video[2:])
    a = torch.randn(shapes.audio)
    ctx = torch.randn(1, 512, 4096)
    t = torch.tensor([900.0])

    with torch.no_grad():
        forward_s = timed(lambda: joint_forward(video_dit, audio_dit, bridge, x, a, ctx, t, t, args.fps), args.repeats)
    towers = MovaTowers([video_dit, video_dit], audio_dit, bridge)
    opts = SamplingOptions(steps=1, cfg_scale=5.0, fps=args.fps)
    cond = torch.randn(1, 20, *shapes.video[2:])
    step_s = timed(lambda: sample(towers, cond, ctx, ctx, torch.randn(shapes.video), a, opts), args.repeats)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "video_dit"
        weight_bytes = write_sharded(video_dit, folder, shards=4)
        out = subprocess.run([sys.executable, "-c", LOAD_CHILD.format(root=str(ROOT), folder=str(folder))],
                             capture_output=True, text=True, check=True).stdout.split()
        base_rss, peak_rss = int(out[0]), int(out[1])

    mib = 1024 * 1024
    print(f"config: video dim {args.dim}, {args.layers} layers; {video_tokens} video tokens, "
          f"{shapes.audio[2]} audio tokens; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"joint forward:              {forward_s:.3f} s")
    print(f"sampling step (CFG, 2 pass): {step_s:.3f} s")
    print(f"sharded load (4 shards):    video expert {weight_bytes / mib:.1f} MiB; process RSS "
          f"{base_rss / mib:.1f} -> {peak_rss / mib:.1f} MiB peak (+{(peak_rss - base_rss) / mib:.1f} MiB, "
          f"{(peak_rss - base_rss) / weight_bytes:.2f}x the weights)")


if __name__ == "__main__":
    main()
