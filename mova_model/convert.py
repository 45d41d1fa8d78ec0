"""Convert a Hugging Face MOVA release into one ComfyUI-ready file per component.

    cd ComfyUI/custom_nodes/<this pack>
    python -m mova_model.convert /path/to/MOVA-360p /path/to/out --dtype fp8_e4m3fn

Writes <prefix>_video_dit_high_<fmt>, <prefix>_video_dit_low_<fmt>, <prefix>_audio_dit_<fmt>,
<prefix>_dual_tower_bridge_<fmt> (fmt: bf16 or fp8_e4m3fn_scaled .safetensors, or q8_0 / q6_k / q5_k / q4_k
.gguf with --dtype gguf_q8_0 ... gguf_q4_k) and <prefix>_audio_vae_fp32.safetensors.
GGUF files keep the Linear weights of the blocks quantised (see mova_model.gguf.write) and the rest in bf16/fp32.
fp8 files use ComfyUI's comfy_quant keys (weight_scale + comfy_quant per layer, ComfyUI v0.8.0 and later)
or, with --fp8-layout scaled_fp8, the older scale_weight + scaled_fp8 marker keys; MOVA's loaders read both.
Tensors are streamed one at a time (peak memory: a few copies of the largest tensor), each file
is written under a temporary name of its own in the output folder, verified against the source, then renamed
(``atomic_write``): an interrupted run, a full disk or another converter writing into the same folder at the
same time never leaves a partial or mixed file. --prefix is a file name prefix: it cannot hold a folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from .configs import config_to_dict
from .files.atomic_write import WriteError, atomic_write
from .files.names import NameProblem, name_parts, path_inside
from .files.safetensors_stream import NAME_DTYPES, RawReader, StreamWriter, TensorSpec
from .gguf import conversion as gguf_conversion
from .gguf.write import FORMATS as GGUF_FORMATS
from .weights.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from .weights.detect import METADATA_CONFIG, METADATA_EXPERT, METADATA_KIND, check_kind, detect_config
from .weights.loading import (
    _is_aux,
    check_against_config,
    check_fp8_layout,
    expected_state,
    model_tensors,
    source_shapes,
)
from .weights.quantize import (
    MARKER_KEY,
    QUANT_CONF_SUFFIX,
    QUANT_SCALE_SUFFIX,
    SCALE_SUFFIX,
    comfy_quant_entry,
    fp8_entries,
    fp8_scale,
    is_fp8_target,
    quantize_fp8,
    rounding_bound,
)

FORMATS = {"bf16": (torch.bfloat16, "bf16"), "fp8_e4m3fn": (torch.float8_e4m3fn, "fp8_e4m3fn_scaled")}
# The audio VAE (DAC, ~0.3 GB) is always written in float32: it is tiny next to the 28 GB of experts,
# runs once per video, and its deep snake/conv stack is where low precision is heard (see test_dac).
VAE_DTYPE, VAE_TAG = torch.float32, "fp32"
METADATA_FORMAT = "mova.format"
METADATA_FP8_LAYOUT = "mova.fp8_layout"
FP8_LAYOUTS = ("comfy_quant", "scaled_fp8")
CHUNK = 1 << 20   # elements compared at a time when verifying fp8 tensors (a few 4 MB temporaries)


@dataclass(frozen=True)
class Part:
    """One output file: which release folder it comes from and what it holds."""

    name: str      # --components name
    folder: str    # release sub-folder
    kind: str
    stem: str      # file name part
    label: str
    expert: str | None = None


PARTS = (
    Part("high", "video_dit", "video_dit", "video_dit_high", "high-noise video expert", "high"),
    Part("low", "video_dit_2", "video_dit", "video_dit_low", "low-noise video expert", "low"),
    Part("audio_dit", "audio_dit", "audio_dit", "audio_dit", "audio DiT"),
    Part("bridge", "dual_tower_bridge", "dual_tower_bridge", "dual_tower_bridge", "dual-tower bridge"),
    Part("audio_vae", "audio_vae", "audio_vae", "audio_vae", "audio VAE (DAC)"),
)


def default_prefix(source: Path) -> str:
    """'MOVA-360p' -> 'mova_360p'; a folder name without 'mova' gets 'mova_' in front."""
    name = re.sub(r"[^a-z0-9]+", "_", source.resolve().name.lower()).strip("_") or "mova"
    return name if name.startswith("mova") else f"mova_{name}"


def is_gguf(part: Part, fmt: str) -> bool:
    """Whether ``part`` is written as .gguf (the audio VAE is always fp32 safetensors)."""
    return fmt in GGUF_FORMATS and part.kind != "audio_vae"


def output_name(prefix: str, part: Part, fmt: str) -> str:
    if is_gguf(part, fmt):
        return f"{prefix}_{part.stem}_{GGUF_FORMATS[fmt].lower()}.gguf"
    tag = VAE_TAG if part.kind == "audio_vae" else FORMATS[fmt][1]
    return f"{prefix}_{part.stem}_{tag}.safetensors"


def target_dtype(key: str, shape, stored: str, kind: str, fmt: str) -> torch.dtype:
    """The dtype ``key`` is written in: fp8 for the fp8 targets, bf16 (fp32 in the VAE) for other floats."""
    dtype = NAME_DTYPES[stored]
    if not dtype.is_floating_point:
        return dtype
    if kind == "audio_vae":
        return VAE_DTYPE
    fp8, _ = FORMATS[fmt]
    return fp8 if fp8 != torch.bfloat16 and is_fp8_target(key, shape) else torch.bfloat16


def _is_fp8(dtype: torch.dtype) -> bool:
    return dtype.itemsize == 1 and dtype.is_floating_point


def plan(ckpt: Checkpoint, kind: str, fmt: str, layout: str = "comfy_quant") -> list[TensorSpec]:
    """Every tensor of the output file: model keys, and per fp8 weight its scale (and comfy_quant entry), or
    for the scaled_fp8 layout one scaled_fp8 marker."""
    dtypes = ckpt.dtypes()
    specs = []
    for key, shape in source_shapes(ckpt, kind).items():
        stored = dtypes.get(key) or dtypes[key[: -len("weight")] + "weight_v"]  # fused weight-norm
        dtype = target_dtype(key, shape, stored, kind, fmt)
        specs.append(TensorSpec(key, dtype, tuple(shape)))
        if _is_fp8(dtype):
            module = key[: -len(".weight")]
            specs += [TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in
                      fp8_entries(module, torch.empty(0, dtype=dtype), torch.ones(()), layout).items() if k != key]
    fp8 = {s.dtype for s in specs if _is_fp8(s.dtype)}
    if fp8 and layout == "scaled_fp8":  # 2 elements: ComfyUI computes from the dequantised weight
        specs.append(TensorSpec(MARKER_KEY, fp8.pop(), (2,)))
    return specs


class Progress:
    """'  write: 10% 20% ... 100%' on stderr, by bytes."""

    def __init__(self, what: str, total: int, stream=sys.stderr):
        self.total, self.done, self.shown, self.stream = max(total, 1), 0, 0, stream
        stream.write(f"  {what}:")
        stream.flush()

    def add(self, nbytes: int) -> None:
        self.done += nbytes
        while self.shown < 100 and self.done * 100 >= (self.shown + 10) * self.total:
            self.shown += 10
            self.stream.write(f" {self.shown}%")
            self.stream.flush()

    def close(self) -> None:
        self.add(self.total)
        self.stream.write("\n")


def _sources(ckpt: Checkpoint, kind: str):
    """(model key, source tensor) in file order, each read from disk on its own."""
    return model_tensors(RawReader(ckpt).tensors([k for k in ckpt.keys() if not _is_aux(k)]), kind)


def write_part(ckpt: Checkpoint, kind: str, specs: list[TensorSpec], path: Path, metadata: dict) -> None:
    """Stream the source into ``path`` following ``specs``."""
    dtypes = {s.key: s.dtype for s in specs}
    layout = "comfy_quant" if any(k.endswith(QUANT_CONF_SUFFIX) for k in dtypes) else "scaled_fp8"
    with StreamWriter(path, specs, metadata) as writer:
        progress = Progress("write", sum(s.nbytes for s in specs if not _is_aux(s.key)))
        for key, tensor in _sources(ckpt, kind):
            if _is_fp8(dtypes[key]):
                q, scale = quantize_fp8(tensor, dtypes[key])
                for name, value in fp8_entries(key[: -len(".weight")], q, scale, layout).items():
                    writer.write(name, value)
            else:
                writer.write(key, tensor.to(dtypes[key]))
            progress.add(tensor.numel() * dtypes[key].itemsize)
        if MARKER_KEY in dtypes:
            writer.write(MARKER_KEY, torch.zeros(2, dtype=dtypes[MARKER_KEY]))
        progress.close()


def verify_part(path: Path, ckpt: Checkpoint, kind: str, specs: list[TensorSpec], metadata: dict) -> None:
    """Re-open ``path`` with safetensors: keys, dtypes, shapes, metadata, and every value against the
    source (bf16/fp32: equal to the rounded source; fp8: dequantised within half an fp8 step)."""
    want = {s.key: s for s in specs}

    def fail(what: str):
        raise CheckpointError(f"{path} failed verification: {what}. Convert again (the disk may be full or faulty).")

    with safe_open(str(path), framework="pt") as f:
        if set(f.keys()) != set(want):
            fail(f"keys differ from the plan ({len(set(f.keys()) ^ set(want))} differ)")
        if (f.metadata() or {}) != metadata:
            fail("metadata differs")
        for key, spec in want.items():
            got = f.get_slice(key)
            if NAME_DTYPES.get(got.get_dtype()) != spec.dtype or tuple(got.get_shape()) != spec.shape:
                fail(f"{key} is {got.get_dtype()} {got.get_shape()}, planned {spec.dtype} {list(spec.shape)}")
    progress = Progress("verify", sum(s.nbytes for s in specs))
    for key, source in _sources(ckpt, kind):
        with safe_open(str(path), framework="pt") as f:  # one tensor mapped at a time
            out = f.get_tensor(key)
            module = key[: -len(".weight")]
            scale_key = next((module + s for s in (QUANT_SCALE_SUFFIX, SCALE_SUFFIX) if module + s in want), None)
            scale = f.get_tensor(scale_key) if scale_key else None
            conf = f.get_tensor(module + QUANT_CONF_SUFFIX) if module + QUANT_CONF_SUFFIX in want else None
        if conf is not None and not torch.equal(conf, comfy_quant_entry(out.dtype)):
            fail(f"{module + QUANT_CONF_SUFFIX} does not describe an {out.dtype} weight")
        if scale is None:
            if not torch.equal(out, source.to(out.dtype)):
                fail(f"{key} differs from the source rounded to {out.dtype}")
        elif not (scale.shape == () and torch.equal(scale, fp8_scale(source, out.dtype))):
            fail(f"{scale_key} ({scale.tolist()}) is not the source's scale")
        elif not _fp8_close(out, scale, source):
            fail(f"{key} (fp8, scale {float(scale):.3g}) is not within fp8 rounding of the source")
        progress.add(want[key].nbytes)
    progress.close()


def _fp8_close(q: torch.Tensor, scale: torch.Tensor, source: torch.Tensor) -> bool:
    """Every |q * scale - source| within the round-to-nearest bound, chunk by chunk (bounded memory)."""
    if scale.dtype != torch.float32 or scale.shape != () or not bool(torch.isfinite(scale)) or float(scale) <= 0:
        return False
    q, source = q.reshape(-1), source.reshape(-1)
    for i in range(0, q.numel(), CHUNK):
        src = source[i:i + CHUNK]
        err = q[i:i + CHUNK].float().mul_(scale).sub_(src.float()).abs_()
        if not bool((err <= rounding_bound(src, scale, q.dtype)).all()):
            return False
    return True


def check_complete(ckpt: Checkpoint, kind: str, config) -> None:
    """Raise the loader's CheckpointError when the source lacks, adds or misshapes a tensor of ``config``'s model."""
    check_against_config(ckpt, kind, *expected_state(kind, config, torch.float32))


def convert_part(source: Path, part: Part, out_path: Path, fmt: str, verify: bool = True,
                 layout: str = "comfy_quant", overwrite: bool = True) -> None:
    """Convert one release folder to ``out_path`` (written under a temporary name, verified, then renamed)."""
    ckpt = open_checkpoint(source, part.folder)
    check_kind(ckpt, part.kind)
    check_fp8_layout(ckpt)
    if any(_is_aux(k) for k in ckpt.keys()):
        raise CheckpointError(
            f"{ckpt.name} is already a converted (scaled) file: convert from the Hugging Face release folder.")
    config = detect_config(ckpt, part.kind)
    check_complete(ckpt, part.kind, config)
    if is_gguf(part, fmt):
        _convert_gguf(source, ckpt, part, config, out_path, fmt, verify, overwrite)
        return
    specs = plan(ckpt, part.kind, fmt, layout)
    metadata = {"format": "pt", METADATA_KIND: part.kind, METADATA_CONFIG: json.dumps(config_to_dict(config)),
                METADATA_FORMAT: VAE_TAG if part.kind == "audio_vae" else FORMATS[fmt][1],
                "mova.source": f"{source.resolve().name}/{part.folder}"}
    if any(_is_fp8(s.dtype) for s in specs):
        metadata[METADATA_FP8_LAYOUT] = layout
    if part.expert:
        metadata[METADATA_EXPERT] = part.expert
    with atomic_write(out_path, overwrite, what=f"the {part.label}") as tmp:
        write_part(ckpt, part.kind, specs, tmp, metadata)
        if verify:
            verify_part(tmp, ckpt, part.kind, specs, metadata)


def _convert_gguf(source: Path, ckpt: Checkpoint, part: Part, config, out_path: Path, fmt: str, verify: bool,
                  overwrite: bool) -> None:
    specs = gguf_conversion.plan_gguf(ckpt, fmt)
    metadata = {METADATA_KIND: part.kind, METADATA_CONFIG: json.dumps(config_to_dict(config)), METADATA_FORMAT: fmt,
                "mova.source": f"{source.resolve().name}/{part.folder}"}
    if part.expert:
        metadata[METADATA_EXPERT] = part.expert
    total = sum(s.nbytes for s in specs)
    with atomic_write(out_path, overwrite, what=f"the {part.label}") as tmp:
        progress = Progress("write", total)
        gguf_conversion.write_part(ckpt, specs, tmp, metadata, progress.add)
        progress.close()
        if verify:
            progress = Progress("verify", total)
            gguf_conversion.verify_part(tmp, ckpt, specs, metadata, progress.add)
            progress.close()


def check_prefix(prefix: str, output: Path, parts, fmt: str) -> None:
    """Refuse a --prefix that is not a plain file name prefix, or that makes a file name too long."""
    if any(sep in prefix for sep in "/\\"):
        raise CheckpointError(
            f"--prefix {prefix!r} holds a folder separator; it is the start of each file name, not a path: give the "
            "folder as the output argument (e.g. out/sub) and a plain --prefix (e.g. mova_360p).")
    try:
        name_parts(prefix, "--prefix", example="mova_360p")
        for part in parts:
            path_inside(output, output_name(prefix, part, fmt), "--prefix", example="mova_360p")
    except NameProblem as exc:
        raise CheckpointError(str(exc)) from None


def _check_release(source: Path, parts) -> None:
    if not (source / "model_index.json").is_file():
        raise CheckpointError(
            f"{source} is not a MOVA release folder (no model_index.json): pass the folder downloaded from "
            "Hugging Face (e.g. OpenMOSS-Team/MOVA-360p), which holds video_dit, video_dit_2, audio_dit, ...")
    missing = [p.folder for p in parts if not (source / p.folder).is_dir()]
    if missing:
        others = " ".join(p.name for p in parts if p.folder not in missing)
        raise CheckpointError(
            f"{source} has no {', '.join(missing)} folder: download the whole release, or convert the other "
            f"components with --components (e.g. --components {others}).")


def _prepare_output(output: Path) -> list[Path]:
    """Check that ``output`` is (or can become) a folder we can write into, before anything is read or written;
    returns the folders created for it (removed again when the conversion fails)."""
    if output.exists() and not output.is_dir():
        raise CheckpointError(f"the output {output} is a file, not a folder: pass a folder for the converted files "
                              "(it is created when missing).")
    created = [p for p in (output, *output.parents) if not p.exists()]
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the output folder {output} ({exc.strerror}): pass a folder you can "
                              "write to.") from exc
    try:
        fd, probe = tempfile.mkstemp(dir=output, prefix=".mova_convert_", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _remove_empty(created)
        raise CheckpointError(f"cannot write into the output folder {output} ({exc.strerror}): pass a folder you "
                              "can write to.") from exc
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # innermost first
        try:
            folder.rmdir()
        except OSError:
            return


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m mova_model.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the Hugging Face MOVA release folder (with model_index.json)")
    parser.add_argument("output", type=Path, help="folder for the .safetensors files (created if missing)")
    parser.add_argument("--dtype", choices=sorted(FORMATS) + list(GGUF_FORMATS), default="fp8_e4m3fn",
                        help="weights of the experts, audio DiT and bridge (the audio VAE is always fp32): bf16 or "
                        "fp8 .safetensors, or .gguf with the blocks' Linear weights quantised (gguf_q8_0 best "
                        "quality, gguf_q4_k smallest)")
    parser.add_argument("--prefix", help="file name prefix (default: from the source folder, e.g. mova_360p)")
    parser.add_argument("--components", nargs="+", choices=[p.name for p in PARTS], default=[p.name for p in PARTS])
    parser.add_argument("--fp8-layout", choices=FP8_LAYOUTS, default="comfy_quant",
                        help="keys of fp8 files: comfy_quant (ComfyUI v0.8.0 and later) or scaled_fp8 (older ComfyUI)")
    parser.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    parser.add_argument("--no-verify", action="store_true", help="skip re-reading the written files (not advised)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    parts = [p for p in PARTS if p.name in args.components]
    prefix = args.prefix or default_prefix(args.source)
    created: list[Path] = []
    try:
        check_prefix(prefix, args.output, parts, args.dtype)
        created = _prepare_output(args.output)  # before anything is read: a wrong output fails at once
        _check_release(args.source, parts)
        outputs = [args.output / output_name(prefix, p, args.dtype) for p in parts]
        existing = [str(o) for o in outputs if o.exists()]
        if existing and not args.overwrite:
            raise CheckpointError(f"{len(existing)} output file(s) already exist (first: {existing[0]}): pass "
                                  "--overwrite to replace them, or choose another output folder or --prefix.")
        for i, (part, out) in enumerate(zip(parts, outputs), 1):
            print(f"[{i}/{len(parts)}] {part.label}: {args.source / part.folder} -> {out}", file=sys.stderr)
            try:
                convert_part(args.source, part, out, args.dtype, verify=not args.no_verify,
                             layout=args.fp8_layout, overwrite=args.overwrite)
            except WriteError as exc:  # names the output file, the cause and the fix
                raise CheckpointError(f"converting {args.source / part.folder}: {exc}") from exc
            except FileExistsError as exc:  # another converter wrote it meanwhile
                raise CheckpointError(f"{exc} (another converter wrote it meanwhile?) Pass --overwrite to replace "
                                      "it.") from exc
            except OSError as exc:  # reading the source
                raise CheckpointError(
                    f"converting {args.source / part.folder} into {out} failed at {exc.filename or out}: "
                    f"{exc.strerror or exc}. Check that the release folder is readable; no partial file was kept."
                ) from exc
    except CheckpointError as exc:
        _remove_empty(created)  # folders made for this run, when nothing was written into them
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done ({peak_ram_text()}). Put the video_dit/audio_dit/bridge files in ComfyUI/models/diffusion_models "
          "and the audio_vae file in ComfyUI/models/vae.", file=sys.stderr)
    return 0


def peak_ram_text() -> str:
    try:
        import resource
    except ImportError:  # Windows
        return "peak RAM not measured"
    return f"peak RAM {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"


if __name__ == "__main__":
    sys.exit(main())
