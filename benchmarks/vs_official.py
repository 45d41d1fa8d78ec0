"""The pack against the official MOVA code, side by side in one process on one device (a script, not a test).

    # one H100/H200, full-size random weights, 360p / 193 frames (under 9 minutes; --budget-s guards it)
    python benchmarks/vs_official.py --official /path/to/OpenMOSS/MOVA --json vs_official.json
    # the same code on the CPU at mid size (a smoke run: every row, small shapes)
    python benchmarks/vs_official.py --quick --official /path/to/OpenMOSS/MOVA

The official modules come from a local checkout (``--official``, see official_mova.py; nothing of it is
kept here). Both sides get the same random weights (one state dict, its tensors shared: one video
expert, the audio DiT and the bridge, 34 GiB in bf16 at full size), the same inputs, and the same
attention kernel (``--kernel``; the profiler's kernel names are printed). In order:

1. bf16 noise (mid size, cheap): official bf16, pack bf16 and pack float32 against the official float32
   forward — the pack's bf16 drift is measured against the official run's own bf16 noise;
2. parity at the timed size: official vs pack forward, rel. L2 and finiteness (non-finite stops the run); the
   kernels one video block launches on each side (profiler);
3. attention kernels at the video self-attention's shape (time, rel. L2 vs SDPA): picks the pack's
   fastest exact and fastest approximate attention;
4. interleaved timing, round after round until ``--rounds`` or the budget: official eager, pack eager
   (same kernel; and both again with ``--also-kernel``, default FlashAttention-3 where installed, the kernel
   the official code picks first), pack eager with the fused kernels (``compile=kernels``), the pack's
   fastest exact configuration (fused ops, every block, audio block and bridge conditioner compiled,
   fastest exact attention), the pack's fastest approximate one (the same with fp8
   weights multiplied in fp8 and the fastest attention, 8-bit included), each with its quality cost;
5. a table: s/step (median/min/max over rounds; a step is one CFG step = two joint forwards), % of the
   step's FLOPs at the GPU's bf16 peak and at a measured GEMM rate, peak VRAM, and pack/official.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import json
import re
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import official_mova  # noqa: E402
from hot_path import count_ops  # noqa: E402
from memory_modes import mid_config  # noqa: E402
from shared_weights import build_states, inputs, pack_float32, pack_parts, rel_l2, step_flops  # noqa: E402

from mova_model.networks import attention as attn  # noqa: E402
from mova_model.networks import fused  # noqa: E402
from mova_model.memory.compiled import compile_blocks  # noqa: E402
from mova_model.configs import MOVA_360P  # noqa: E402
from mova_model.sampling.joint import joint_forward  # noqa: E402

GIB = 1024 ** 3
BF16 = torch.bfloat16
# dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by GPU name
PEAKS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}
TARGETS = {"pack eager / official eager (same kernel)": 0.85, "pack fastest exact / official eager": 0.7,
           "360p H100 fastest exact s/step": 8.0, "360p H100 fastest approximate s/step": 5.5}


# -- the run -------------------------------------------------------------------------------------------

class Run:
    def __init__(self, args):
        self.args = args
        self.start = time.perf_counter()
        self.device = torch.device("cpu" if args.quick else args.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.cuda = self.device.type == "cuda"
        if not self.cuda:  # inductor's CPU kernels (the official compiled modulate and RoPE) show in the profiler
            import torch._inductor.config as inductor_config
            inductor_config.cpp.enable_kernel_profile = True
        self.kernel = args.kernel if args.kernel != "auto" else ("cudnn" if self.cuda else "sdpa")
        self.official = official_mova.load_official(args.official)
        name = torch.cuda.get_device_name(self.device) if self.cuda else f"cpu ({torch.get_num_threads()} threads)"
        self.record = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "device": name, "kernel_forced_on_both": self.kernel,
            "official_stand_ins": self.official.stand_ins, "targets": TARGETS, "skipped": [],
            "packages": {p: _version(p) for p in ("flash-attn-3", "fa3-fwd", "sageattention", "torchao", "triton")},
        }

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def note(self, text: str) -> None:
        print(text, flush=True)

    def skip(self, what: str, need: float) -> bool:
        if need <= self.left():
            return False
        self.record["skipped"].append(f"{what}: needs ~{need:.0f} s, {self.left():.0f} s left")
        self.note(f"skipped {what}: needs ~{need:.0f} s, {self.left():.0f} s left")
        self.save()
        return True

    def save(self) -> None:
        if self.args.json:
            path = Path(self.args.json)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(self.record, indent=1, default=str))
            tmp.replace(path)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def sdpa_context(self, kernel: str | None = None):
        if (kernel or self.kernel) != "cudnn":
            return nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.CUDNN_ATTENTION)

    def pack_backend(self, kernel: str | None = None) -> str:
        return {"cudnn": "sdpa_cudnn", "flash3": "flash3", "sdpa": "sdpa"}[kernel or self.kernel]

    # -- the two sides ---------------------------------------------------------------------------------
    def official_forward(self, parts, runner, x, a, ctx, fps, kernel: str | None = None):
        kernel = kernel or self.kernel
        official_mova.force_official_attention(self.official, "flash3" if kernel == "flash3" else "sdpa",
                                               attn.flash3_function() if kernel == "flash3" else None)
        t = torch.tensor([900.0], device=self.device)
        with self.sdpa_context(kernel):
            return official_mova.official_step(self.official, runner, parts, x, a, ctx, t, fps)

    def pack_forward(self, parts, x, a, ctx, fps, backend=None, dtype=BF16, kernels=False):
        t = torch.tensor([900.0], device=self.device)
        with torch.no_grad(), attn.use_attention_backend(backend or self.pack_backend(), self.device), \
                fused.use_fused_kernels(kernels):
            out = joint_forward(parts["video"], parts["audio"], parts["bridge"], x, a, ctx, t, t, fps, dtype=dtype)
        return out.video, out.audio

    # -- 1. bf16 noise at mid size -------------------------------------------------------------------
    def bf16_noise(self):
        if self.args.no_noise_check:
            return
        config = mid_config()
        h, w, frames = (176, 320, 9)
        states = build_states(config, self.device, seed=3)
        x, a, ctxs, _, _ = inputs(config, self.device, h, w, frames, self.args.fps, 64, torch.float32)
        runs = {}
        for dtype in (torch.float32, BF16):
            cast = {n: {k: v.to(dtype) for k, v in s.items()} for n, s in states.items()}
            official = official_mova.build_official(self.official, config, cast, self.device)
            runner = official_mova.make_runner(self.official, official)
            runs[f"official {dtype}"] = self.official_forward(official, runner, x.to(dtype), a.to(dtype),
                                                              ctxs[0].to(dtype), self.args.fps)
            pack = pack_parts(config, cast) if dtype == BF16 else pack_float32(config, cast)
            runs[f"pack {dtype}"] = self.pack_forward(pack, x.to(dtype), a.to(dtype), ctxs[0].to(dtype), self.args.fps,
                                                      dtype=dtype)
            del official, runner, pack, cast
        ref = runs["official torch.float32"]
        noise = {}
        for key in ("official torch.bfloat16", "pack torch.bfloat16", "pack torch.float32"):
            noise[key.replace("torch.", "") + " vs official float32"] = {
                "video": rel_l2(runs[key][0].float(), ref[0].float()), "audio": rel_l2(runs[key][1].float(), ref[1].float())}
        self.record["bf16_noise_mid_size"] = noise
        self.note("bf16 noise (mid size, rel. L2 against the official float32 forward):")
        for key, v in noise.items():
            self.note(f"  {key:42s} video {v['video']:.2e}  audio {v['audio']:.2e}")
        self.save()

    # -- 2-4 ---------------------------------------------------------------------------------------------
    def run(self):
        rec, args = self.record, self.args
        self.calibrate()
        self.bf16_noise()
        config = mid_config() if args.quick else MOVA_360P
        h, w = (176, 320) if args.quick else (args.height, args.width)
        frames = args.frames or (9 if args.quick else 193)
        text = 64 if args.quick else 512
        x, a, ctxs, nv, na = inputs(config, self.device, h, w, frames, args.fps, text)
        flops = step_flops(config, nv, na, text)
        rec.update(size="mid (quick)" if args.quick else "full (MOVA-360p architecture)", height=h, width=w,
                   frames=frames, video_tokens=nv, audio_tokens=na, text_tokens=text, step_pflop=flops / 1e15)
        self.note(f"{rec['device']}, torch {rec['torch']}, {rec['size']}: {w}x{h}, {frames} frames, {nv} video + {na} "
                  f"audio tokens; one CFG step = {flops / 1e12:.4g} TFLOP; kernel on both: {self.kernel}")
        t0 = time.perf_counter()
        states = build_states(config, self.device, seed=0)
        official = official_mova.build_official(self.official, config, states, self.device)
        runner = official_mova.make_runner(self.official, official)
        eager = pack_parts(config, states)
        self.sync()
        rec["build_s"] = round(time.perf_counter() - t0, 1)
        rec["weights_gib"] = round(sum(t.numel() * 2 for s in states.values() for t in s.values()) / GIB, 2)
        self.kernel_names(config, official, eager, x.shape, nv)

        # parity first
        t0 = time.perf_counter()
        ref = self.official_forward(official, runner, x, a, ctxs[0], args.fps)
        self.sync()
        official_s = time.perf_counter() - t0
        ours = self.pack_forward(eager, x, a, ctxs[0], args.fps)
        parity = {"video": rel_l2(ours[0].float(), ref[0].float()), "audio": rel_l2(ours[1].float(), ref[1].float()),
                  "finite": bool(all(torch.isfinite(t).all() for t in (*ref, *ours)))}
        rec["parity_pack_vs_official_bf16"] = parity
        self.note(f"parity (bf16, pack vs official, one forward): video {parity['video']:.2e}, audio "
                  f"{parity['audio']:.2e}, finite {parity['finite']}; first official forward {official_s:.1f} s")
        self.save()
        if not parity["finite"]:
            rec["stopped"] = "a forward gave non-finite values: nothing timed"
            self.note(rec["stopped"])
            self.save()
            return rec
        if max(parity["video"], parity["audio"]) > args.parity_bound:  # random deep nets amplify rounding
            rec["parity_warning"] = f"rel. L2 above {args.parity_bound}: look before trusting the timings"
            self.note("WARNING: " + rec["parity_warning"])

        exact, approx = self.attention_kernels(config, nv)
        configs = self.configurations(config, states, official, runner, eager, exact, approx)
        self.timing(configs, x, a, ctxs, flops, ref)
        return rec

    def calibrate(self):
        """Measured bf16 GEMM rate (8192^3 on a GPU, 1024^3 on the CPU) and the datasheet peak."""
        n = 8192 if self.cuda else 1024
        gen = torch.Generator(self.device).manual_seed(7)
        m1, m2 = (torch.randn(n, n, device=self.device, generator=gen).to(BF16) for _ in range(2))
        m1 @ m2
        self.sync()
        reps = 10 if self.cuda else 2
        t0 = time.perf_counter()
        for _ in range(reps):
            m1 @ m2
        self.sync()
        rate = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12
        name = self.record["device"]
        peak = next((v for k, v in PEAKS.items() if k in name), None) if self.cuda else None
        self.record.update(gemm_tflops=float(f"{rate:.4g}"), peak_tflops=peak)
        self.note(f"GEMM calibration: bf16 {n}^3 at {rate:.1f} TFLOP/s; datasheet peak "
                  f"{peak if peak else 'unknown'} TFLOP/s")

    def kernel_names(self, config, official, eager, x_shape, tokens):
        """The attention kernels each side runs (profiler names of one video self-attention), and the kernels
        one video block launches on each side."""
        heads, d = config.video.num_heads, config.video.head_dim
        gen = torch.Generator(self.device).manual_seed(2)
        q = torch.randn(1, tokens, heads * d, device=self.device, generator=gen).to(BF16)
        with attn.use_attention_backend(self.pack_backend(), self.device):
            pack_names = attn.sdpa_kernel_names(self.device, BF16, heads, d, tokens=min(tokens, 4096))
        official_mova.force_official_attention(self.official, "flash3" if self.kernel == "flash3" else "sdpa",
                                               attn.flash3_function() if self.kernel == "flash3" else None)
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if self.cuda else [])
        small = q[:, : min(tokens, 4096)]
        with self.sdpa_context(), torch.profiler.profile(activities=activities) as prof:
            self.official.video.flash_attention(small, small, small, num_heads=heads)
            self.sync()
        words = ("attention", "sdpa", "fmha", "flash", "sage", "attn")
        official_names = sorted({e.key for e in prof.key_averages() if any(w in e.key.lower() for w in words)})
        blocks = {}
        grid = (x_shape[2], x_shape[3] // 2, x_shape[4] // 2)
        rope_pack = eager["video"].rope(grid, self.device)
        ctx = torch.randn(1, 64, config.video.dim, device=self.device, generator=gen).to(BF16)
        t_mod = torch.randn(1, 6, config.video.dim, device=self.device, generator=gen).to(BF16)
        freqs = torch.cat([official["video"].freqs[0][: grid[0]].view(grid[0], 1, 1, -1).expand(*grid, -1),
                           official["video"].freqs[1][: grid[1]].view(1, grid[1], 1, -1).expand(*grid, -1),
                           official["video"].freqs[2][: grid[2]].view(1, 1, grid[2], -1).expand(*grid, -1)],
                          dim=-1).reshape(tokens, 1, -1).to(self.device)
        for side, run in (("official", lambda: official["video"].blocks[0](q, ctx, t_mod, freqs)),
                          ("pack", lambda: eager["video"].blocks[0](q, ctx, t_mod, rope_pack))):
            with torch.no_grad(), self.sdpa_context(), attn.use_attention_backend(self.pack_backend(), self.device):
                run()
                self.sync()
                with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
                    run()
                    self.sync()
            events = prof.key_averages()
            if self.cuda:
                blocks[side] = {"gpu_kernels": sum(e.count for e in events if e.device_time_total > 0
                                                   and not e.key.startswith(("aten::", "cuda", "Torch-Compiled"))),
                                "gpu_ms": round(sum(e.self_device_time_total for e in events) / 1000, 2)}
            else:  # what would be GPU kernels: compute ops, composite norms counted once (see hot_path.py)
                blocks[side] = {"kernels": count_ops(prof)["kernels"], "dtype_copies": count_ops(prof)["dtype_copies"]}
        self.record.update(attention_kernel_names={"official": official_names, "pack": pack_names},
                           one_video_block=blocks)
        self.note(f"attention kernels  official: {official_names}\n                   pack:     {pack_names}")
        self.note(f"one video block (eager, profiler): {blocks}")
        self.save()

    def attention_kernels(self, config, tokens):
        """Every attention backend at the video self-attention's shape: ms and rel. L2 against SDPA. Returns the
        fastest exact backend and the fastest one overall (the approximate configuration's)."""
        heads, d = config.video.num_heads, config.video.head_dim
        gen = torch.Generator(self.device).manual_seed(4)
        q, k, v = (torch.randn(1, tokens, heads * d, device=self.device, generator=gen).to(BF16) for _ in range(3))
        rows, reference = [], None
        for name in attn.attention_backends()[1:]:
            row = {"backend": name}
            if not attn.is_available(name, self.device):
                row["status"] = "not available here"
            else:
                try:
                    with attn.use_attention_backend(name, self.device):
                        out = attn.attention(q, k, v, heads)
                        self.sync()
                        t0 = time.perf_counter()
                        for _ in range(3):
                            out = attn.attention(q, k, v, heads)
                        self.sync()
                    row["ms"] = round((time.perf_counter() - t0) / 3 * 1000, 2)
                    row["tflops"] = round(4 * tokens * tokens * heads * d / (row["ms"] / 1000) / 1e12, 1)
                    reference = out.float() if reference is None else reference
                    row["rel_l2_vs_sdpa"] = rel_l2(out.float(), reference)
                except Exception as exc:  # a kernel that fails is a result too
                    row["status"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            rows.append(row)
            self.note(f"  attention {name:11s} " + (f"{row['ms']:9.2f} ms {row['tflops']:7.1f} TFLOP/s rel.L2 "
                                                     f"{row['rel_l2_vs_sdpa']:.1e}" if "ms" in row else row["status"]))
        self.record["attention_kernels"] = rows
        timed = [r for r in rows if "ms" in r]
        exact = min((r for r in timed if r["rel_l2_vs_sdpa"] < 5e-3), key=lambda r: r["ms"])["backend"]
        approx = min(timed, key=lambda r: r["ms"])["backend"]
        self.save()
        return exact, approx

    def configurations(self, config, states, official, runner, eager, exact, approx):
        """(name, forward function, setup note) for each timed configuration; the compiled and fp8 ones are
        built here (sharing the bf16 tensors; fp8 adds its own fp8 weights)."""
        fps = self.args.fps
        configs = [
            ("official eager", lambda x, a, c: self.official_forward(official, runner, x, a, c, fps),
             f"official code as is (its compiled modulate and bridge RoPE), SDPA path, kernel {self.kernel}"),
            ("pack eager", lambda x, a, c: self.pack_forward(eager, x, a, c, fps),
             f"fused eager ops, attention {self.pack_backend()} (the same kernel)"),
        ]
        for kernel in self.args.also_kernel:
            if kernel == self.kernel or not attn.is_available(self.pack_backend(kernel), self.device):
                self.record["skipped"].append(f"kernel {kernel} on both: not available here")
                continue
            configs += [
                (f"official eager [{kernel}]", lambda x, a, c, k=kernel: self.official_forward(official, runner, x, a,
                                                                                             c, fps, k),
                 f"official code as is, attention {kernel}"),
                (f"pack eager [{kernel}]", lambda x, a, c, k=kernel: self.pack_forward(eager, x, a, c, fps,
                                                                                     self.pack_backend(k)),
                 f"fused eager ops, attention {self.pack_backend(kernel)}")]
        configs.append(("pack fused kernels", lambda x, a, c: self.pack_forward(eager, x, a, c, fps, kernels=True),
                        f"eager blocks with the fused kernels (compile=kernels), attention {self.pack_backend()}"))
        compiled = pack_parts(config, states)
        compile_blocks(compiled["video"], compiled["audio"], compiled["bridge"])
        configs.append(("pack fastest exact", lambda x, a, c: self.pack_forward(compiled, x, a, c, fps, exact),
                        f"bf16, every block, audio block and bridge conditioner compiled, attention {exact}"))
        if self.args.no_fp8:
            self.record["skipped"].append("pack fastest approximate: --no-fp8")
        else:
            fp8 = pack_parts(config, states, fp8=True)
            compile_blocks(fp8["video"], fp8["audio"], fp8["bridge"])
            configs.append(("pack fastest approximate",
                            lambda x, a, c: self.pack_forward(fp8, x, a, c, fps, approx),
                            f"fp8 weights multiplied in fp8 (per-token activations, bias in the GEMM where the GPU "
                            f"allows), compiled as above, attention {approx}"))
        return configs

    def timing(self, configs, x, a, ctxs, flops, ref):
        rec = self.record
        results = {name: {"name": name, "setup": note, "s_step": [], "vram_peak_gib": 0.0} for name, _, note in configs}
        rec["configurations"] = list(results.values())
        # warm-up forward of each (compiles), with its quality cost against the official forward
        active = []
        for name, fn, _ in configs:
            if self.skip(f"{name} warm-up", 30 if self.cuda else 10):
                continue
            t0 = time.perf_counter()
            try:
                out = fn(x, a, ctxs[0])
                self.sync()
            except Exception as exc:
                results[name]["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                self.note(f"{name}: {results[name]['error']}")
                continue
            results[name]["warmup_s"] = round(time.perf_counter() - t0, 2)
            results[name]["rel_l2_vs_official"] = {"video": rel_l2(out[0].float(), ref[0].float()),
                                                   "audio": rel_l2(out[1].float(), ref[1].float())}
            active.append((name, fn))
            self.note(f"{name}: warm-up forward {results[name]['warmup_s']} s, rel. L2 vs official video "
                      f"{results[name]['rel_l2_vs_official']['video']:.2e}")
            del out
            self.save()
        # interleaved rounds: each configuration times one CFG step per round
        for r in range(self.args.rounds):
            need = sum(statistics.median(results[n]["s_step"]) if results[n]["s_step"] else
                       2 * results[n].get("warmup_s", 10) for n, _ in active)
            if r > 0 and self.skip(f"timing round {r + 1}", need * 1.1):
                break
            for name, fn in list(active):
                gc.collect()
                if self.cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(self.device)
                self.sync()
                t0 = time.perf_counter()
                try:
                    for ctx in ctxs:  # CFG: conditional and unconditional pass
                        fn(x, a, ctx)
                    self.sync()
                except Exception as exc:  # out of memory, a kernel that fails: the others go on
                    results[name]["error"] = f"round {r + 1}: {type(exc).__name__}: {str(exc)[:300]}"
                    active.remove((name, fn))
                    continue
                results[name]["s_step"].append(round(time.perf_counter() - t0, 3))
                if self.cuda:
                    peak = torch.cuda.max_memory_allocated(self.device) / GIB
                    results[name]["vram_peak_gib"] = round(max(results[name]["vram_peak_gib"], peak), 2)
            self.note(f"round {r + 1}: " + ", ".join(f"{n} {results[n]['s_step'][-1]:.3f} s" for n, _ in active))
            if not active:
                break
            self.save()
        base = results["official eager"]["s_step"]
        for res in results.values():
            steps = res["s_step"]
            if not steps:
                continue
            med = statistics.median(steps)
            res.update(median=med, min=min(steps), max=max(steps),
                       pct_of_gemm_rate=round(100 * flops / (med * rec["gemm_tflops"] * 1e12), 1))
            if rec.get("peak_tflops"):
                res["pct_of_peak"] = round(100 * flops / (med * rec["peak_tflops"] * 1e12), 1)
            own = re.search(r"\[(\w+)\]$", res["name"])  # a pair timed with another kernel: its own official
            ref_steps = results.get(f"official eager [{own.group(1)}]", {}).get("s_step") if own else base
            if ref_steps:
                res["vs_official"] = round(med / statistics.median(ref_steps), 3)
        officials = [statistics.median(r["s_step"]) for n, r in results.items() if n.startswith("official") and r["s_step"]]
        for res in results.values():
            if "median" in res and officials:
                res["vs_fastest_official"] = round(res["median"] / min(officials), 3)
        self.save()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def print_table(rec: dict) -> None:
    print(f"\n{rec['device']}, torch {rec['torch']}, {rec.get('size')}, {rec.get('width')}x{rec.get('height')}, "
          f"{rec.get('frames')} frames, step {rec.get('step_pflop', 0) * 1000:.4g} TFLOP, {rec['date']}")
    print(f"kernel forced on both: {rec['kernel_forced_on_both']}; GEMM {rec.get('gemm_tflops')} TFLOP/s measured, "
          f"peak {rec.get('peak_tflops')}")
    if "parity_pack_vs_official_bf16" in rec:
        p = rec["parity_pack_vs_official_bf16"]
        print(f"parity pack vs official (bf16): video {p['video']:.2e} audio {p['audio']:.2e} finite {p['finite']}")
    print(f"{'configuration':26s} {'median':>8s} {'min':>8s} {'max':>8s} {'%peak':>6s} {'%GEMM':>6s} {'VRAM':>7s} "
          f"{'/official':>9s}  rel.L2 vs official")
    for res in rec.get("configurations", []):
        if "median" not in res:
            print(f"{res['name']:26s} {res.get('error', 'not timed')}")
            continue
        err = res.get("rel_l2_vs_official", {})
        print(f"{res['name']:26s} {res['median']:8.3f} {res['min']:8.3f} {res['max']:8.3f} "
              f"{res.get('pct_of_peak', float('nan')):6.1f} {res['pct_of_gemm_rate']:6.1f} "
              f"{res['vram_peak_gib']:6.1f}G {res.get('vs_official', float('nan')):9.3f}  "
              f"video {err.get('video', float('nan')):.1e} audio {err.get('audio', float('nan')):.1e}")
    by = {r["name"]: r for r in rec.get("configurations", []) if "median" in r}
    checks = [("pack eager / official eager (same kernel)", by.get("pack eager", {}).get("vs_official")),
              ("pack eager / official eager (same kernel)", by.get("pack eager [flash3]", {}).get("vs_official")),
              ("pack fastest exact / official eager", by.get("pack fastest exact", {}).get("vs_official"))]
    if "H100" in rec["device"] and "full" in str(rec.get("size")):
        checks += [("360p H100 fastest exact s/step", by.get("pack fastest exact", {}).get("median")),
                   ("360p H100 fastest approximate s/step", by.get("pack fastest approximate", {}).get("median"))]
    if "cpu" in rec["device"]:
        print("targets: judged on a GPU only (CPU timings on a shared machine show that each configuration runs)")
        checks = []
    fastest = by.get("pack fastest exact", {}).get("vs_fastest_official")
    if checks and fastest is not None and len([n for n in by if n.startswith("official")]) > 1:
        checks.append(("pack fastest exact / official eager", fastest))
    for name, value in checks:
        if value is not None:
            verdict = "met" if value <= TARGETS[name] else "missed"
            print(f"target {name} <= {TARGETS[name]}: {value} {verdict}")
    for s in rec.get("skipped", []):
        print(f"skipped {s}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="folder of a checkout of OpenMOSS/MOVA (holds 'mova/')")
    parser.add_argument("--quick", action="store_true", help="CPU run at mid size (smoke run of every row)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--kernel", choices=("auto", "cudnn", "flash3", "sdpa"), default="auto",
                        help="attention kernel forced on both sides (auto: cuDNN's on a GPU, SDPA on the CPU)")
    parser.add_argument("--also-kernel", nargs="*", default=["flash3"], choices=("cudnn", "flash3", "sdpa"),
                        help="time official eager and pack eager with this kernel too, where it is installed "
                        "(default flash3: the kernel the official code picks first)")
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--frames", type=int, default=None, help="video frames (193; --quick: 9)")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (fewer if the budget ends)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="rows that would not end within this are skipped (default 480; --quick: 1200)")
    parser.add_argument("--parity-bound", type=float, default=0.1,
                        help="rel. L2 of pack vs official (bf16) above which a warning is recorded (non-finite stops)")
    parser.add_argument("--no-fp8", action="store_true", help="leave out the fp8 (approximate) configuration")
    parser.add_argument("--no-noise-check", action="store_true", help="leave out the mid-size bf16 noise check")
    parser.add_argument("--json", default=None, help="write the record here (after every stage)")
    args = parser.parse_args(argv)
    if not args.quick and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --quick for the CPU run at mid size")
    if args.budget_s is None:
        args.budget_s = 1200.0 if args.quick else 480.0
    if args.kernel == "flash3" and not attn.is_available("flash3", None):
        parser.error("--kernel flash3: no FlashAttention-3 build is installed (flash_attn_interface or fa3_fwd_interface)")
    run = Run(args)
    rec = run.run()
    print_table(rec)
    return rec


if __name__ == "__main__":
    main()
