"""MOVA on several GPUs of one machine: seconds per sampling step for each parallel plan (a script, not a test).

    # a machine with 8 GPUs: full-size random weights written once to WEIGHTS (about 65 GB), 360p / 193 frames
    python benchmarks/multi_gpu.py --weights /data/mova_random --json multi_gpu.json \\
        --plans 1 cfg:2 ulysses:2 ulysses:4 cfg+ulysses:4 ulysses:8 cfg+ulysses:8 ulysses:2+fsdp
    # 720p (1280x720): add --res 720p
    # smoke run of the same code on the CPU: a mid-size random release in a temporary folder, gloo
    python benchmarks/multi_gpu.py --quick

Each plan runs in a fresh pool of worker processes on the first N GPUs (``mova_model/parallel``, as MOVA Parallel
runs them inside ComfyUI): one warm-up step, then ``--steps`` timed CFG steps; a step's time is the interval
between two of the workers' progress messages (what ComfyUI's progress bar sees). The pool's start and the
loading of the weights are timed apart. Plan names: ``1`` (one GPU, the baseline, through the same worker code),
``ulysses:N``, ``cfg:N``, ``cfg+ulysses:N``, each optionally ``+fsdp`` (weights sharded). ``--weights`` names a
folder holding a MOVA release (a real one, or the random one this script writes there when it is empty).
The text encoder and the VAEs are not part of a step and are not timed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mova_model.sampling import sizes  # noqa: E402
from mova_model.configs import MOVA_360P, DACConfig, MovaConfig, config_to_dict  # noqa: E402
from mova_model.parallel import remote  # noqa: E402
from mova_model.parallel.plan import ParallelPlan, plan_for  # noqa: E402
from mova_model.parallel.pool import WorkerPool  # noqa: E402
from mova_model.sampling.sampler import SamplingOptions  # noqa: E402

RESOLUTIONS = {"360p": (352, 640), "720p": (720, 1280)}
COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")
SHARD_BYTES = 4 << 30


def mid_config() -> MovaConfig:
    """A mid-size MOVA for the CPU smoke run (4 video heads: Ulysses 2 and 4 fit)."""
    from mova_model.configs import BridgeConfig, DiTConfig
    video = DiTConfig(dim=512, num_heads=4, num_layers=8, ffn_dim=2048, in_dim=36, out_dim=16, patch_size=(1, 2, 2))
    audio = DiTConfig(dim=256, num_heads=2, num_layers=6, ffn_dim=1024, in_dim=128, out_dim=128, patch_size=(1,))
    bridge = BridgeConfig(visual_layers=8, audio_layers=6, visual_hidden_dim=512, audio_hidden_dim=256)
    return MovaConfig(video=video, audio=audio, bridge=bridge)


def write_random_release(root: Path, config: MovaConfig, dtype=torch.bfloat16) -> None:
    """A release folder with N(0, 0.02) weights in ``dtype``, in safetensors shards of at most 4 GiB."""
    from safetensors.torch import save_file

    from mova_model.networks.bridge import DualTowerBridge
    from mova_model.networks.dit import WanDiT

    configs = {"video_dit": config.video, "video_dit_2": config.video, "audio_dit": config.audio,
               "dual_tower_bridge": config.bridge}
    gen = torch.Generator().manual_seed(0)
    for name in COMPONENTS:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        with torch.device("meta"):
            model = DualTowerBridge(configs[name]) if name == "dual_tower_bridge" else WanDiT(configs[name])
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        shard, size, files, weight_map = {}, 0, [], {}

        def flush():
            nonlocal shard, size
            if shard:
                files.append(f"diffusion_pytorch_model-{len(files) + 1:05d}.safetensors")
                save_file(shard, str(folder / files[-1]))
                weight_map.update({k: files[-1] for k in shard})
                shard, size = {}, 0

        for key, shape in shapes.items():
            shard[key] = (torch.randn(shape, generator=gen) * 0.02).to(dtype)
            size += shard[key].numel() * shard[key].element_size()
            if size >= SHARD_BYTES:
                flush()
        flush()
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}))
        (folder / "config.json").write_text(json.dumps(config_to_dict(configs[name])))
        print(f"wrote {name}: {len(files)} files", flush=True)


def parse_plan(name: str) -> ParallelPlan:
    base, _, extra = name.partition("+fsdp")
    if base == "1":
        return ParallelPlan(1, 1, bool(extra) or "+fsdp" in name)
    mode, _, count = base.rpartition(":")
    return plan_for(mode, int(count), shard_weights="+fsdp" in name)


def run_plan(plan: ParallelPlan, devices: list[str], models: dict, inputs: dict, steps: int, timeout: float) -> dict:
    """One pool, one sampling run of ``steps`` + 1 steps; the record of the plan."""
    record = {"plan": plan.describe(), "devices": devices}
    start = time.monotonic()
    pool = WorkerPool(plan, devices, timeout=timeout, start_timeout=timeout)
    try:
        pool.start()
        record["start_s"] = round(time.monotonic() - start, 2)
        marks = []
        began = time.monotonic()
        remote.ParallelRunner(pool, timeout=timeout).sample(
            models, inputs, on_step=lambda step, total, preview: marks.append(time.monotonic()))
        intervals = [b - a for a, b in zip(marks, marks[1:])]
        record["load_and_first_step_s"] = round(marks[0] - began, 2)
        record["s_per_step"] = round(statistics.mean(intervals), 3)
        record["step_s"] = [round(x, 3) for x in intervals]
    except Exception as exc:  # a plan that does not fit (memory, heads) is recorded, the others still run
        record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        pool.stop()
    print(json.dumps(record), flush=True)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="a MOVA release folder (written with random weights if empty)")
    parser.add_argument("--plans", nargs="+", default=["1", "cfg:2", "ulysses:2", "ulysses:4", "cfg+ulysses:4",
                                                       "ulysses:8", "cfg+ulysses:8"])
    parser.add_argument("--res", choices=sorted(RESOLUTIONS), default="360p")
    parser.add_argument("--frames", type=int, default=193)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--dtype", choices=("bf16", "fp8"), default="bf16", help="fp8: block weights in fp8")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: mid-size model, small video, gloo")
    parser.add_argument("--json", type=Path, help="write the record here")
    args = parser.parse_args(argv)

    config = mid_config() if args.quick else MOVA_360P
    height, width = (192, 320) if args.quick else RESOLUTIONS[args.res]
    frames = 9 if args.quick else args.frames
    plans = ["1", "cfg:2", "ulysses:2"] if args.quick and args.plans == parser.get_default("plans") else args.plans
    gpus = 0 if args.quick else torch.cuda.device_count()
    scratch = None
    weights = args.weights
    if weights is None:
        scratch = tempfile.TemporaryDirectory(prefix="mova_bench_")
        weights = Path(scratch.name)
    if not any(weights.glob("video_dit*/config.json")):
        write_random_release(weights, config)
    compute = torch.float32 if args.quick else torch.bfloat16
    fp8 = args.dtype == "fp8"
    models = remote.models_description([remote.model_spec(weights / "video_dit", fp8=fp8),
                                        remote.model_spec(weights / "video_dit_2", fp8=fp8)],
                                       remote.model_spec(weights / "audio_dit", fp8=fp8),
                                       remote.model_spec(weights / "dual_tower_bridge"), compute)
    dac = DACConfig()
    shapes = sizes.latent_shapes(1, height, width, frames, args.fps, dac, config.audio.in_dim)
    gen = torch.Generator().manual_seed(0)
    video, audio = torch.randn(shapes.video, generator=gen), torch.randn(shapes.audio, generator=gen)
    condition = torch.randn(1, 20, *shapes.video[2:], generator=gen)
    text = [torch.randn(1, 512, config.video.text_dim, generator=gen) for _ in range(2)]
    options = SamplingOptions(steps=args.steps + 1, fps=args.fps)
    inputs = remote.run_inputs(condition, text[0], text[1], video, audio, options)
    record = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "res": f"{width}x{height}",
              "frames": frames, "video_tokens": shapes.video[2] * shapes.video[3] * shapes.video[4] // 4,
              "audio_tokens": shapes.audio[2], "dtype": args.dtype,
              "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)], "plans": []}
    for name in plans:
        plan = parse_plan(name)
        if not args.quick and plan.world > gpus:
            record["plans"].append({"plan": name, "skipped": f"needs {plan.world} GPUs, {gpus} here"})
            continue
        devices = ["cpu"] * plan.world if args.quick else [f"cuda:{i}" for i in range(plan.world)]
        record["plans"].append({"name": name, **run_plan(plan, devices, models, inputs, args.steps, args.timeout)})
        if args.json:
            args.json.write_text(json.dumps(record, indent=1))
    base = next((p["s_per_step"] for p in record["plans"] if p.get("name") == "1" and "s_per_step" in p), None)
    for p in record["plans"]:
        speedup = f"  {base / p['s_per_step']:.2f}x" if base and "s_per_step" in p else ""
        print(f"{p.get('name', p.get('plan')):>18}: {p.get('s_per_step', p.get('error', p.get('skipped')))}{speedup}")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
