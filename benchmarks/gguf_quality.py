"""File size, peak host memory, CPU seconds per step and quality cost of each weight format (a script, not a test):
bf16 and fp8 .safetensors and the GGUF types Q8_0, Q6_K, Q5_K, Q4_K, all written by python -m mova_model.convert.

    python benchmarks/gguf_quality.py            # the golden tiny release and a mid-size random one
    python benchmarks/gguf_quality.py --steps 6 --mid-size 320x176x17

For each release and format: the four converted files (both video experts, audio DiT, bridge) and their size
against bf16; then, in a fresh process per format (so that the peak RSS is that run's), the parts are loaded and
one sampling run (CFG 5, fixed noise and inputs) is timed; quality: the rel. L2 of its video and audio latents
against the bf16 run. Tiny: the golden set's inputs and sizes. Mid: the mid-size config of memory_modes.py with
random weights N(0, 0.02) (modulation N(0, 0.1)), random text states and condition.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

FORMATS = ("bf16", "fp8_e4m3fn", "gguf_q8_0", "gguf_q6_k", "gguf_q5_k", "gguf_q4_k")
PARTS = {"high": ("video_dit", "video_dit_high"), "low": ("video_dit", "video_dit_low"),
         "audio_dit": ("audio_dit", "audio_dit"), "bridge": ("dual_tower_bridge", "dual_tower_bridge")}


def write_mid_release(root: Path) -> Path:
    """memory_modes.mid_config() as a release folder with random weights."""
    from memory_modes import mid_config

    from mova_model.configs import config_to_dict
    from mova_model.networks.bridge import DualTowerBridge
    from mova_model.networks.dit import WanDiT
    from safetensors.torch import save_file

    config = mid_config()
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "MOVA", "boundary_ratio": 0.9}))
    for seed, (folder, cls, part) in enumerate((("video_dit", WanDiT, config.video), ("video_dit_2", WanDiT, config.video),
                                                ("audio_dit", WanDiT, config.audio),
                                                ("dual_tower_bridge", DualTowerBridge, config.bridge))):
        torch.manual_seed(seed)
        model = cls(part)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.normal_(0.0, 0.1 if name.endswith("modulation") else 0.02)
        (root / folder).mkdir(exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(root / folder / "diffusion_pytorch_model.safetensors"))
        (root / folder / "config.json").write_text(json.dumps(config_to_dict(part)))
    return root


def file_name(fmt: str, part: str) -> str:
    from mova_model.convert import PARTS as CONVERT_PARTS
    from mova_model.convert import output_name
    return output_name("b", next(p for p in CONVERT_PARTS if p.name == part), fmt)


def inputs(release: str, golden: Path, mid_size: tuple[int, int, int], out: Path) -> dict:
    """The sampling inputs (saved to ``out``) and settings of one release."""
    from safetensors.torch import save_file

    if release == "tiny":
        from safetensors.torch import load_file
        cases = json.loads((golden / "cases.json").read_text())
        g = load_file(str(golden / "cases.safetensors"))
        tensors = {k: g[k] for k in ("condition", "context_pos", "context_neg", "noise_video", "noise_audio")}
        settings = {"steps": cases["sample_steps"], "fps": cases["fps"], "boundary_ratio": cases["boundary_ratio"],
                    "size": f"{cases['width']}x{cases['height']}, {cases['num_frames']} frames"}
    else:
        from memory_modes import mid_config

        from mova_model.configs import DACConfig
        from mova_model.sampling import sizes
        width, height, frames = mid_size
        shapes = sizes.latent_shapes(1, height, width, frames, 24.0, DACConfig(), mid_config().audio.in_dim)
        gen = torch.Generator().manual_seed(0)
        condition = torch.zeros(1, 20, *shapes.video[2:])
        condition[:, :4, 0] = 1.0
        condition[:, 4:, 0] = torch.randn(1, 16, *shapes.video[3:], generator=gen)
        tensors = {"condition": condition, "context_pos": torch.randn(1, 32, 4096, generator=gen),
                   "context_neg": torch.randn(1, 32, 4096, generator=gen),
                   "noise_video": torch.randn(shapes.video, generator=gen),
                   "noise_audio": torch.randn(shapes.audio, generator=gen)}
        settings = {"steps": None, "fps": 24.0, "boundary_ratio": 0.9, "size": f"{width}x{height}, {frames} frames"}
    save_file(tensors, str(out))
    return settings


RUN = """
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
from safetensors.torch import load_file, save_file
from mova_model.weights.loading import load_component
from mova_model.sampling import sampler
folder, names, inputs, steps, fps, boundary, out = sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]), sys.argv[8]
torch.set_num_threads(2)
load = lambda part, kind: load_component(f"{folder}/{names[part]}", kind)
towers = sampler.MovaTowers([load("high", "video_dit"), load("low", "video_dit")], load("audio_dit", "audio_dit"),
                            load("bridge", "dual_tower_bridge"))
g = load_file(inputs)
options = sampler.SamplingOptions(steps=steps, cfg_scale=5.0, fps=fps, boundary_ratio=boundary)
start = time.perf_counter()
video, audio = sampler.sample(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"], g["noise_audio"], options)
seconds = time.perf_counter() - start
save_file({"video": video.float().contiguous(), "audio": audio.float().contiguous()}, out)
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"s_per_step": seconds / steps, "peak_rss": peak}))
"""


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=Path, default=None, help="golden set folder (default: the project's)")
    parser.add_argument("--steps", type=int, default=6, help="sampling steps of the mid-size run")
    parser.add_argument("--mid-size", default="320x176x17", help="WIDTHxHEIGHTxFRAMES of the mid-size run")
    parser.add_argument("--releases", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid"])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS,
                        help="formats to measure (bf16 first: the reference of the rel. L2)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from mova_pack import golden_root

    from mova_model import convert
    golden = args.golden or golden_root()
    mid_size = tuple(int(v) for v in args.mid_size.split("x"))
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="gguf_quality_") as tmp:
        tmp = Path(tmp)
        for release in args.releases:
            source = golden / "checkpoint" if release == "tiny" else write_mid_release(tmp / "mid_release")
            settings = inputs(release, golden, mid_size, tmp / f"{release}_inputs.safetensors")
            steps = settings["steps"] or args.steps
            rows, reference = [], None
            for fmt in ["bf16"] + [f for f in args.formats if f != "bf16"]:
                folder = tmp / release / fmt
                code = convert.main([str(source), str(folder), "--prefix", "b", "--dtype", fmt, "--components",
                                     *PARTS])
                if code:
                    raise SystemExit(f"converting {release} to {fmt} failed")
                names = {part: file_name(fmt, part) for part in PARTS}
                size = sum((folder / n).stat().st_size for n in names.values())
                out = tmp / f"{release}_{fmt}_out.safetensors"
                run = subprocess.run([sys.executable, "-c", RUN, str(ROOT), str(folder), json.dumps(names),
                                      str(tmp / f"{release}_inputs.safetensors"), str(steps),
                                      str(settings["fps"]), str(settings["boundary_ratio"]), str(out)],
                                     check=True, capture_output=True, text=True)
                measured = json.loads(run.stdout.strip().splitlines()[-1])
                from safetensors.torch import load_file
                result = load_file(str(out))
                reference = reference or result
                rows.append((fmt, size, measured, rel_l2(result["video"], reference["video"]),
                             rel_l2(result["audio"], reference["audio"])))
            bf16 = rows[0][1]
            print(f"\n{release} release ({settings['size']}, {steps} steps, CFG 5):")
            print("| format | files (4 parts) | vs bf16 | peak RSS | s/step | rel L2 video | rel L2 audio |")
            print("|---|---|---|---|---|---|---|")
            for fmt, size, m, video, audio in rows:
                print(f"| {fmt} | {size / 2**20:.2f} MiB | {size / bf16:.2f}x | {m['peak_rss'] / 2**20:.0f} MiB | "
                      f"{m['s_per_step']:.3f} | {video:.4f} | {audio:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
