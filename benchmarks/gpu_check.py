"""The GPU check: every speed and memory figure of full-size MOVA in one run (a script, not a test).

    # one H100/H200 (under 9 minutes): full-size random weights, 360p / 193 frames, one 720p step
    python benchmarks/gpu_check.py --json gpu_check.json
    # smoke run of the same code on the CPU (mid-size random model, small frames)
    python benchmarks/gpu_check.py --quick

Rows, in the order they run (a row that would not fit in what is left of ``--budget-s`` is
skipped and says so; every row is written to the JSON as soon as it is measured):
attention kernels alone (time of one video self-attention per backend, error against SDPA);
360p bf16 with each attention backend; a profile of one bf16 forward (top kernels);
fp8 weights dequantised to bf16; fp8 matmul (scaled fp8 GEMM); fp8 + block swap inside 24 GiB
and 12 GiB; fp8 matmul + compiled blocks; one 720p bf16 step; bf16 + compiled blocks.
A step is one CFG step: two joint forwards (video expert + audio DiT + bridge), after one
warm-up forward. Random weights: speed and memory do not depend on their values. The text
encoder and the VAEs are not part of a step and are not timed.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_modes import host_rss_peak, mid_config, random_, reset_host_peak, weight_bytes  # noqa: E402

from mova_model.sampling import sizes  # noqa: E402
from mova_model.networks.attention import attention_backends, is_available, use_attention_backend  # noqa: E402
from mova_model.networks.bridge import DualTowerBridge  # noqa: E402
from mova_model.memory.compiled import compile_blocks, uncompile_blocks  # noqa: E402
from mova_model.configs import MOVA_360P, DACConfig  # noqa: E402
from mova_model.networks.dit import WanDiT  # noqa: E402
from mova_model.sampling.joint import joint_forward  # noqa: E402
from mova_model.memory.offload import disable_block_swap, enable_block_swap  # noqa: E402
from mova_model.networks.ops import enable_fp8_matmul  # noqa: E402
from mova_model.weights.quantize import quantize_fp8_  # noqa: E402

GIB = 1024 ** 3
ROW_GROUPS = ("profile", "backends", "dequant", "matmul", "swap", "compile", "720p")
BF16 = torch.bfloat16
# Targets (benchmark, not tests): seconds per 360p step, ratios to the resident fp8 step, host RAM.
TARGETS = {
    "360p bf16 s/step": 8.5,
    "360p fp8 + compile s/step": 7.0,
    "24 GiB swap / resident": 2.0,
    "12 GiB swap / resident": 3.0,
    "12 GiB swap host RSS GiB": 40.0,
    "720p bf16 s/step": 100.0,
}


class Check:
    """Runs the rows, keeps the record and the time budget."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device("cpu" if args.quick else args.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.cuda = self.device.type == "cuda"
        self.config = mid_config() if args.quick else MOVA_360P
        self.res = {"360p": (176, 320), "720p": (352, 640)} if args.quick else {"360p": (352, 640), "720p": (720, 1280)}
        self.frames = args.frames or (9 if args.quick else 193)
        self.start = time.perf_counter()
        self.record = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(self.device) if self.cuda else f"cpu ({torch.get_num_threads()} threads)",
            "size": "mid (quick)" if args.quick else "full (MOVA-360p architecture)",
            "frames": self.frames, "fps": args.fps, "targets": TARGETS,
            "attention_kernels": [], "rows": [], "profile": [], "skipped": [],
        }
        if self.cuda:
            props = torch.cuda.get_device_properties(self.device)
            self.record["vram_gib"] = round(props.total_memory / GIB, 1)
        self.parts = None  # (high, low, audio_dit, bridge)

    # -- bookkeeping -------------------------------------------------------------------------
    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def save(self) -> None:
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(self.record, indent=1))

    def fits(self, name: str, estimate_s: float) -> bool:
        if estimate_s <= self.left():
            return True
        self.record["skipped"].append(f"{name}: needs ~{estimate_s:.0f} s, {self.left():.0f} s left")
        print(f"skipped {name}: needs ~{estimate_s:.0f} s, {self.left():.0f} s left", flush=True)
        self.save()
        return False

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peaks(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        reset_host_peak()

    def vram_peak(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / GIB if self.cuda else float("nan")

    # -- the model -------------------------------------------------------------------------
    def build(self, with_low: bool = True) -> None:
        self.parts = None
        self.reset_peaks()
        c = self.config
        high = random_(WanDiT(c.video, device=self.device, dtype=BF16))
        low = random_(WanDiT(c.video, device=self.device, dtype=BF16)) if with_low else None
        audio_dit = random_(WanDiT(c.audio, device=self.device, dtype=BF16))
        bridge = random_(DualTowerBridge(c.bridge, device=self.device, dtype=BF16))
        self.parts = (high, low, audio_dit, bridge)

    def inputs(self, res: str):
        h, w = self.res[res]
        shapes = sizes.latent_shapes(1, h, w, self.frames, self.args.fps, DACConfig(), self.config.audio.in_dim)
        gen = torch.Generator(self.device).manual_seed(0)
        make = lambda *s: torch.randn(*s, device=self.device, dtype=BF16, generator=gen)  # noqa: E731
        x = make(1, 36, *shapes.video[2:])
        a = make(*shapes.audio)
        ctx = [make(1, 512, self.config.video.text_dim) for _ in range(2)]
        tokens = shapes.video[2] * (shapes.video[3] // 2) * (shapes.video[4] // 2)
        return x, a, ctx, tokens

    def forward(self, x, a, ctx):
        high, _, audio_dit, bridge = self.parts
        t = torch.tensor([950.0], device=self.device)
        with torch.no_grad():
            return joint_forward(high, audio_dit, bridge, x, a, ctx, t, t, self.args.fps, dtype=BF16)

    def timed_step(self, res: str, warmup: bool = True):
        """(warm-up forward s, s/step averaged over --steps CFG steps)."""
        x, a, ctx, _ = self.inputs(res)
        warm = float("nan")
        if warmup:
            t0 = time.perf_counter()
            self.forward(x, a, ctx[0])
            self.sync()
            warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(self.args.steps):
            for c in ctx:  # CFG: conditional and unconditional pass
                self.forward(x, a, c)
        self.sync()
        return warm, (time.perf_counter() - t0) / self.args.steps

    def row(self, name: str, res: str = "360p", backend: str = "sdpa", note: str = "", warmup: bool = True,
            target: str | None = None, **extra):
        self.reset_peaks()
        try:
            with use_attention_backend(backend, self.device):
                warm, per_step = self.timed_step(res, warmup)
            row = {"name": name, "res": res, "attention": backend, "s_step": round(per_step, 3),
                   "warmup_forward_s": round(warm, 2), "vram_peak_gib": round(self.vram_peak(), 2),
                   "host_rss_peak_gib": round(host_rss_peak() / GIB, 2), "note": note, **extra}
        except Exception as exc:  # a failed row is a result too; the next rows still run
            row = {"name": name, "res": res, "attention": backend, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        if target:
            row["target"] = target
            row["target_value"] = TARGETS[target]
        self.record["rows"].append(row)
        self.save()
        print(json.dumps(row), flush=True)
        return row

    # -- the rows --------------------------------------------------------------------------
    def attention_kernels(self):
        """One video self-attention of the 360p shape per backend: ms, and rel. L2 against sdpa."""
        h, w = self.res["360p"]
        _, _, _, tokens = self.inputs("360p")
        heads, d = self.config.video.num_heads, self.config.video.head_dim
        gen = torch.Generator(self.device).manual_seed(1)
        q, k, v = (torch.randn(1, tokens, heads * d, device=self.device, dtype=BF16, generator=gen) for _ in range(3))
        from mova_model.networks.attention import attention

        reference = None
        for name in attention_backends()[1:]:
            entry = {"backend": name}
            if not is_available(name, self.device):
                entry["status"] = "not available here"
            else:
                try:
                    with use_attention_backend(name, self.device):
                        out = attention(q, k, v, heads)
                        self.sync()
                        t0 = time.perf_counter()
                        for _ in range(self.args.kernel_repeats):
                            out = attention(q, k, v, heads)
                        self.sync()
                    entry["ms"] = round((time.perf_counter() - t0) / self.args.kernel_repeats * 1000, 2)
                    flops = 4 * tokens * tokens * heads * d
                    entry["tflops"] = round(flops / (entry["ms"] / 1000) / 1e12, 1)
                    if reference is None:
                        reference = out.float()
                    entry["rel_l2_vs_sdpa"] = float((out.float() - reference).norm() / reference.norm())
                except Exception as exc:
                    entry["status"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.record["attention_kernels"].append(entry)
            print(json.dumps(entry), flush=True)
        if self.cuda:
            self.record["sdpa_kernel_names"] = sdpa_kernel_names(q, heads)
            print("SDPA kernels:", self.record["sdpa_kernel_names"], flush=True)
        self.save()

    def profile(self, res="360p"):
        """Top kernels by device time in one bf16 forward."""
        if not self.cuda:
            return
        x, a, ctx, _ = self.inputs(res)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            self.forward(x, a, ctx[0])
            self.sync()
        events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
        total = sum(e.device_time_total for e in events) or 1
        self.record["profile"] = [
            {"kernel": e.key[:120], "ms": round(e.device_time_total / 1000, 1), "share": round(e.device_time_total / total, 3),
             "calls": e.count} for e in events[:15]]
        self.save()
        for p in self.record["profile"]:
            print(f"  {p['share'] * 100:5.1f}%  {p['ms']:9.1f} ms  {p['calls']:5d}x  {p['kernel']}", flush=True)

    def swap_rows(self, fp8_row: dict, compute_note: str):
        high, low, audio_dit, bridge = self.parts
        activations = max(1.0, fp8_row["vram_peak_gib"] - self.resident_gib)
        if low is not None:
            low.to("cpu")  # the low-noise expert waits in host memory until the boundary
        for budget in self.args.swap_budgets:
            if not self.fits(f"fp8 swap {budget} GiB", 3.5 * fp8_row["s_step"] + 20):
                continue
            audio_note = ""
            if budget <= 16:  # small budgets: the audio DiT streams its blocks too
                enable_block_swap(audio_dit, self.device, resident=0)
                audio_note = "; audio DiT blocks streamed too"
            ablock = weight_bytes(audio_dit.blocks[0])
            others = weight_bytes(bridge) + weight_bytes(audio_dit) - (
                ablock * (len(audio_dit.blocks) - 2) if audio_note else 0)
            block = weight_bytes(high.blocks[0])
            outside = weight_bytes(high) - block * len(high.blocks)
            reserve = (1.5 * activations + 1.0) * GIB  # the caching allocator fragments: keep a margin
            free = budget * GIB - reserve - others - outside - 2 * block
            resident = int(max(0, min(len(high.blocks), free // block)))
            if self.args.quick:
                resident = len(high.blocks) // 2
            enable_block_swap(high, self.device, resident=resident)
            gc.collect()
            if self.cuda:
                torch.cuda.empty_cache()
                total = torch.cuda.get_device_properties(self.device).total_memory
                torch.cuda.set_per_process_memory_fraction(budget * GIB / total, self.device)
            try:
                self.row(f"fp8 + block swap, {budget} GiB", note=f"{resident}/{len(high.blocks)} blocks resident; "
                         f"{compute_note}{audio_note}; low-noise expert in host RAM; reserve {1.5 * activations + 1:.1f} GiB",
                         target=f"{budget} GiB swap / resident", resident_s_step=fp8_row["s_step"],
                         ratio=None)
                last = self.record["rows"][-1]
                if "s_step" in last:
                    last["ratio"] = round(last["s_step"] / fp8_row["s_step"], 2)
                    self.save()
            finally:
                if self.cuda:
                    torch.cuda.set_per_process_memory_fraction(1.0, self.device)
        disable_block_swap(high)
        disable_block_swap(audio_dit)
        for part in self.parts:
            if part is not None:
                part.to(self.device)


def sdpa_kernel_names(q: torch.Tensor, heads: int) -> list[str]:
    """The kernels torch's default SDPA launches for MOVA's attention (profiler names)."""
    b, l, c = q.shape
    qh = q.view(b, l, heads, c // heads).transpose(1, 2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        torch.nn.functional.scaled_dot_product_attention(qh, qh, qh)
        torch.cuda.synchronize()
    return sorted({e.key[:100] for e in prof.key_averages() if e.device_time_total > 0})


def attention_share_720p(check: Check) -> float:
    """How much longer a 720p forward is than a 360p one, from the token counts (attention ~ N^2)."""
    n360, n720 = check.inputs("360p")[3], check.inputs("720p")[3]
    # at 360p about 55% of a forward is attention (quadratic), 45% linear in tokens
    return 0.55 * (n720 / n360) ** 2 + 0.45 * (n720 / n360)


def run(args):
    check = Check(args)
    rec = check.record
    print(f"torch {rec['torch']}, {rec['device']}, {rec['size']}, {check.frames} frames", flush=True)
    check.attention_kernels()

    # bf16, everything resident (both experts, as in a real run)
    with_low = not check.cuda or torch.cuda.get_device_properties(check.device).total_memory > 100 * GIB
    check.build(with_low=with_low)
    check.resident_gib = sum(weight_bytes(p) for p in check.parts if p is not None) / GIB
    rec["bf16_weights_gib"] = round(check.resident_gib, 2)
    where = "both experts resident" if with_low else "low-noise expert not built (GPU under 100 GiB)"
    base = check.row("bf16, SDPA", note=where, target="360p bf16 s/step")
    step = base.get("s_step", 60.0)
    if "profile" in args.rows:
        check.profile()
    for backend in ("sage", "flash3", "sdpa_cudnn"):
        if "backends" in args.rows and is_available(backend, check.device) and check.fits(f"bf16 {backend}", 2 * step + 10):
            check.row(f"bf16, {backend}", backend=backend, note=where)
    rows = {r["name"]: r for r in rec["rows"]}
    best = min((r for r in rows.values() if "s_step" in r), key=lambda r: r["s_step"])["attention"]
    rec["fastest_attention"] = best

    # fp8 weights (blocks and bridge stored e4m3fn, per-tensor scale)
    for part in check.parts:
        if part is not None:
            quantize_fp8_(part)
    check.resident_gib = sum(weight_bytes(p) for p in check.parts if p is not None) / GIB
    rec["fp8_weights_gib"] = round(check.resident_gib, 2)
    dequant = {}
    if "dequant" in args.rows:
        dequant = check.row("fp8 dequant, SDPA", note=f"{where}; weights dequantised to bf16 per layer")
    for part in check.parts:
        if part is not None:
            enable_fp8_matmul(part, True)
    matmul = {}
    if "matmul" in args.rows:
        matmul = check.row("fp8 matmul, SDPA", note=f"{where}; torch._scaled_mm, activations per token")
    if "s_step" not in matmul and "s_step" not in dequant:  # fp8 matmul failed: measure the dequant path
        for part in check.parts:
            if part is not None:
                enable_fp8_matmul(part, False)
        dequant = check.row("fp8 dequant, SDPA", note=f"{where}; weights dequantised to bf16 per layer")
    use_matmul = matmul.get("s_step", 1e9) < dequant.get("s_step", 1e9)
    for part in check.parts:
        if part is not None:
            enable_fp8_matmul(part, use_matmul)
    resident_row = matmul if use_matmul else dequant
    if "s_step" in resident_row and "swap" in args.rows:
        check.swap_rows(resident_row, "fp8 matmul" if use_matmul else "fp8 dequant")

    # compiled blocks (video expert; the audio tower and bridge are ~7% of the work and stay eager)
    high = check.parts[0]
    for part in check.parts:
        if part is not None:
            enable_fp8_matmul(part, True)
    if "compile" in args.rows and check.fits("fp8 matmul + compile", 90 + 3 * step):
        compile_blocks(high)
        check.row("fp8 matmul + compile, " + best, backend=best, note="video expert blocks compiled; "
                  "warm-up forward includes compilation", target="360p fp8 + compile s/step")
        uncompile_blocks(high)

    # 720p: one bf16 step
    estimate = attention_share_720p(check) * step / 2
    check.parts = None
    gc.collect()
    if "720p" not in args.rows:
        pass
    elif check.fits("720p bf16 step", 2 * estimate + 30):
        check.build(with_low=with_low)
        check.row(f"720p bf16, {best}", res="720p", backend=best, warmup=False, note=f"{where}; no warm-up forward "
                  "(kernels warmed at 360p)", target="720p bf16 s/step")
    elif check.fits("720p bf16 forward", estimate + 30):  # noqa: SIM114
        check.build(with_low=with_low)
        x, a, ctx, _ = check.inputs("720p")
        check.reset_peaks()
        t0 = time.perf_counter()
        with use_attention_backend(best, check.device):
            check.forward(x, a, ctx[0])
        check.sync()
        one = time.perf_counter() - t0
        rec["rows"].append({"name": f"720p bf16 one forward, {best}", "res": "720p", "forward_s": round(one, 2),
                            "vram_peak_gib": round(check.vram_peak(), 2), "note": "one forward only (time)"})
        check.save()

    # bf16 + compile at 360p
    if "compile" not in args.rows:
        return rec
    if check.parts is None:
        if not check.fits("bf16 + compile", 120 + 3 * step):
            return rec
        check.build(with_low=False)
    if check.fits("bf16 + compile", 90 + 3 * step):
        compile_blocks(check.parts[0])
        check.row("bf16 + compile, " + best, backend=best, note="video expert blocks compiled; warm-up forward "
                  "includes compilation")
    return rec


def print_table(rec):
    print(f"\n{rec['device']}, torch {rec['torch']}, {rec['size']}, {rec['frames']} frames, {rec['date']}")
    for k in rec["attention_kernels"]:
        print(f"  attention {k['backend']:11s} " + (f"{k['ms']:8.1f} ms {k['tflops']:6.1f} TFLOP/s rel.L2 "
              f"{k['rel_l2_vs_sdpa']:.1e}" if "ms" in k else k.get("status", "")))
    print(f"  {'row':44s} {'s/step':>8s} {'warm-up':>8s} {'VRAM':>7s} {'host':>7s}  target")
    for r in rec["rows"]:
        if "error" in r:
            print(f"  {r['name']:44s} error: {r['error'][:100]}")
            continue
        s = r.get("s_step", float("nan"))
        target = ""
        if r.get("target"):
            value = r.get("ratio", s) if "swap" in r["target"] else s
            target = f"{r['target']} <= {r['target_value']}: {value} {'met' if value <= r['target_value'] else 'MISSED'}"
        print(f"  {r['name']:44s} {s:8.2f} {r.get('warmup_forward_s', float('nan')):8.2f} "
              f"{r.get('vram_peak_gib', float('nan')):6.1f}G {r.get('host_rss_peak_gib', float('nan')):6.1f}G  {target}")
    for s in rec["skipped"]:
        print(f"  skipped {s}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU smoke run at mid size (small frames)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=None, help="video frames (193; --quick: 9)")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--steps", type=int, default=1, help="timed CFG steps per row, after one warm-up forward")
    parser.add_argument("--kernel-repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip rows that would not end within this")
    parser.add_argument("--rows", nargs="+", default=list(ROW_GROUPS), choices=ROW_GROUPS,
                        help="which groups of rows to run besides the bf16 SDPA baseline (default: all)")
    parser.add_argument("--swap-budgets", nargs="+", type=int, default=[24, 12], help="VRAM budgets (GiB) of the swap rows")
    parser.add_argument("--json", default=None, help="write the record here (after every row)")
    args = parser.parse_args()
    if not args.quick and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --quick for the CPU smoke run")
    rec = run(args)
    print_table(rec)


if __name__ == "__main__":
    main()
