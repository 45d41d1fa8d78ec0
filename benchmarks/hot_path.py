"""Kernel and copy counts of one joint forward, from the CPU profiler (a script, not a test).

    python benchmarks/hot_path.py                    # eager, bf16, mid-size random model, fused ops on
    python benchmarks/hot_path.py --fused off        # the reference math (one op per formula term)
    python benchmarks/hot_path.py --compile kernels  # the fused kernels (compiled RMS norm + RoPE, modulation)
    python benchmarks/hot_path.py --compile blocks   # compiled blocks (inductor's CPU kernels counted)
    python benchmarks/hot_path.py --json counts.json

What a GPU launches follows the same op list: every aten op that computes runs one kernel on a GPU
(F.rms_norm is one fused kernel there; on the CPU it is composite and its parts are counted as one).
Counted per forward (video expert + audio DiT + bridge): compute ops (leaf aten ops that write
memory; views, reshapes and allocations excluded), dtype/device copies (``aten::_to_copy``), plain
copies (``aten::copy_`` outside ``_to_copy``: contiguous/cat), element-wise float32 ops on bf16
activations, and inductor's generated kernels when compiled. A steady-state forward is counted
(after one warm-up forward, so caches of RoPE tables and compiled graphs are filled).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_modes import mid_config, random_  # noqa: E402

from mova_model.networks import fused  # noqa: E402
from mova_model.sampling import sizes  # noqa: E402
from mova_model.networks.bridge import DualTowerBridge  # noqa: E402
from mova_model.memory.compiled import compile_blocks  # noqa: E402
from mova_model.configs import DACConfig  # noqa: E402
from mova_model.networks.dit import WanDiT  # noqa: E402
from mova_model.sampling.joint import joint_forward  # noqa: E402

# ops that only make views, metadata or empty buffers: no kernel on a GPU
NO_KERNEL = {
    "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::transpose", "aten::t", "aten::permute",
    "aten::expand", "aten::unsqueeze", "aten::squeeze", "aten::as_strided", "aten::slice", "aten::select",
    "aten::chunk", "aten::split", "aten::unbind", "aten::narrow", "aten::unflatten", "aten::flatten",
    "aten::view_as_real", "aten::view_as_complex", "aten::empty", "aten::empty_strided", "aten::empty_like",
    "aten::detach", "aten::alias", "aten::lift_fresh", "aten::result_type", "aten::resolve_conj",
    "aten::resolve_neg", "aten::_unsafe_view", "aten::contiguous", "aten::to", "aten::type_as",
    "aten::item", "aten::_local_scalar_dense", "aten::set_", "aten::is_nonzero", "aten::dim",
    "aten::size", "aten::stride", "aten::numel", "aten::_has_compatible_shallow_copy_type", "aten::resize_",
    "aten::zeros", "aten::fill_", "aten::zero_",
}
# composite ops whose parts are one kernel on a GPU: count the op, not its parts
ONE_KERNEL = {"aten::rms_norm", "aten::layer_norm", "aten::native_layer_norm", "aten::linear", "aten::addmm",
              "aten::scaled_dot_product_attention", "aten::gelu", "aten::silu", "aten::conv3d", "aten::conv1d",
              "aten::_scaled_mm"}


def count_ops(prof) -> dict:
    """Per-op counts of the kernels a forward runs (see the module docstring)."""
    kernels: collections.Counter = collections.Counter()
    casts = copies = 0

    def visit(event, inside_one: bool):
        nonlocal casts, copies
        name = event.name
        children = [c for c in event.cpu_children]
        if name == "aten::_to_copy":
            if event.input_shapes and event.input_shapes[0] == []:
                return  # a Python number promoted on the host: no kernel on a GPU
            casts += 1
            kernels["aten::_to_copy"] += 1
            return
        if name in ONE_KERNEL and not inside_one:
            kernels[name] += 1
            return  # its parts are one kernel
        if name.startswith(("cpp_fused", "graph_", "triton_")) or "cpp_fused" in name:
            kernels["inductor kernel"] += 1
            return
        computing = [c for c in children if c.name.startswith("aten::") and c.name not in NO_KERNEL]
        if name.startswith("aten::") and not computing and name not in NO_KERNEL and not inside_one:
            kernels[name] += 1
            if name == "aten::copy_":
                copies += 1
        for child in children:
            visit(child, inside_one)

    roots = [e for e in prof.profiler.function_events if e.cpu_parent is None]
    for root in roots:
        visit(root, False)
    return {"kernels": sum(kernels.values()), "dtype_copies": casts, "plain_copies": copies,
            "pow": kernels.get("aten::pow", 0), "by_op": dict(kernels.most_common())}


def build(dtype: torch.dtype):
    config = mid_config()
    torch.manual_seed(0)
    parts = [random_(WanDiT(config.video, dtype=dtype)), random_(WanDiT(config.audio, dtype=dtype)),
             random_(DualTowerBridge(config.bridge, dtype=dtype))]
    shapes = sizes.latent_shapes(1, 176, 320, 9, 24.0, DACConfig(), config.audio.in_dim)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 36, *shapes.video[2:], generator=gen).to(dtype)
    a = torch.randn(*shapes.audio, generator=gen).to(dtype)
    ctx = torch.randn(1, 64, config.video.text_dim, generator=gen).to(dtype)
    return config, parts, (x, a, ctx)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fused", choices=("on", "off"), default="on", help="fused element-wise ops (default on)")
    parser.add_argument("--compile", choices=("off", "kernels", "blocks"), default="off",
                        help="kernels: the fused kernels (compiled small functions); blocks: every block and bridge "
                        "conditioner compiled")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    config, parts, (x, a, ctx) = build(dtype)
    if args.compile != "off":
        import torch._inductor.config as inductor_config
        inductor_config.cpp.enable_kernel_profile = True  # inductor's kernels show up in the profiler
    if args.compile == "blocks":
        compile_blocks(*parts)
    t = torch.tensor([900.0])

    def forward():
        with torch.no_grad(), fused.use_fused_ops(args.fused == "on"), \
                fused.use_fused_kernels(args.compile == "kernels"):
            return joint_forward(*parts, x, a, ctx, t, t, 24.0, dtype=dtype)

    forward()  # warm-up: RoPE tables, compiled graphs
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        forward()
    counts = count_ops(prof)
    layers = {"video blocks": config.video.num_layers, "audio blocks": config.audio.num_layers,
              "bridge layers": len(config.bridge.interaction_layers)}
    record = {"fused": args.fused, "compiled": args.compile, "dtype": args.dtype, "layers": layers,
              "torch": torch.__version__, **counts}
    print(f"compile {args.compile}, fused {args.fused}, {args.dtype}, torch {torch.__version__}, "
          f"mid-size model ({layers})")
    print(f"  kernels per forward: {counts['kernels']}   dtype copies: {counts['dtype_copies']}   "
          f"plain copies: {counts['plain_copies']}   pow: {counts['pow']}")
    for name, n in list(counts["by_op"].items())[:14]:
        print(f"    {n:5d}  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
