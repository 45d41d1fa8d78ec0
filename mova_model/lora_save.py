"""Writing MOVA LoRAs in the official trainers' key layout.

- ``.safetensors``: ``<component>.<module>.lora_A.weight`` [r,in] and ``.lora_B.weight`` [out,r]
  (``video_dit.blocks.0.self_attn.q.lora_A.weight`` …), rank and alpha in the metadata (per-module
  ``<component>.<module>.alpha`` tensors when they differ). Read by the MOVA LoRA Loader.
- the official folder: ``lora_weights.pt`` (the same keys) + ``lora_config.pt`` (rank, alpha, the parts), the
  layout MOVA's own inference script (``--lora_path``) and its accelerate trainer (``resume_from``) read.
  ``lora_config.pt`` also holds ``weights_sha256``, the digest of the ``lora_weights.pt`` it belongs to: the pair
  is written config first, weights last, each through a temporary file and a rename, and the MOVA LoRA Loader
  refuses a pair whose digests differ (a save cut off between the two renames), naming both files.

Every file is written through ``atomic_write``: an interrupted or failed save (disk full, permission, Cancel)
leaves the previous file as it was.

Command line (from the pack folder), to make the official folder from a .safetensors LoRA:
``python -m mova_model.lora_save my_lora.safetensors out_folder``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import torch

from .atomic_write import atomic_write
from .lora import OFFICIAL_CONFIG, OFFICIAL_WEIGHTS, WEIGHTS_DIGEST, LoraFile, read_lora
from .saving import file_digest, save_safetensors, save_torch

SAVE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PART_ORDER = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")


def lora_tensors(lora: LoraFile, dtype: torch.dtype = torch.float32) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors in the official key layout, settings) of a LoRA. Settings hold rank and alpha when every
    module shares them; otherwise each module gets a ``.alpha`` tensor and settings stay empty."""
    tensors, ranks = {}, {}
    for component in sorted(lora.patches, key=PART_ORDER.index):
        for key, patch in sorted(lora.patches[component].items()):
            module = f"{component}.{key[: -len('.weight')]}"
            tensors[f"{module}.lora_A.weight"] = patch.down.to(dtype).contiguous()
            tensors[f"{module}.lora_B.weight"] = patch.up.to(dtype).contiguous()
            rank = patch.down.shape[0]
            ranks[module] = (rank, round(patch.scale * rank, 6))
    if not tensors:
        raise ValueError(f"{lora.path} holds no LoRA weights to save")
    if len(set(ranks.values())) == 1:
        rank, alpha = next(iter(ranks.values()))
        return tensors, {"rank": int(rank), "alpha": float(alpha)}
    for module, (_, alpha) in ranks.items():
        tensors[f"{module}.alpha"] = torch.tensor(float(alpha))
    return tensors, {}


def _refuse_existing(path: Path, overwrite: bool, what: str) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists: choose another {what}, or allow overwriting to replace it.")


def save_lora_safetensors(lora: LoraFile, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                          overwrite: bool = False, extra_metadata: dict | None = None) -> Path:
    """Write ``lora`` as a .safetensors in the official key layout; refuses to replace a file unless
    ``overwrite``. Written through a temporary file, so an existing file is never left half-written."""
    path = Path(path)
    _refuse_existing(path, overwrite, "file name")
    tensors, settings = lora_tensors(lora, dtype)
    metadata = {k: str(v) for k, v in settings.items()}
    parts = sorted({k.split(".", 1)[0] for k in tensors}, key=PART_ORDER.index)
    metadata["mova_parts"] = json.dumps(parts)
    metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra_metadata or {}).items()})
    return save_safetensors(tensors, path, metadata, overwrite=overwrite, what="the LoRA")


def save_official_folder(lora: LoraFile, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``folder/lora_weights.pt`` + ``folder/lora_config.pt`` (plain tensors, numbers and texts only,
    readable with ``torch.load(weights_only=True)``); returns the weights file. Both files are checked before
    either is written; the config goes first and names the weights' digest, the weights go last."""
    folder = Path(folder)
    weights, config = folder / OFFICIAL_WEIGHTS, folder / OFFICIAL_CONFIG
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not a folder: choose another folder for lora_weights.pt and "
                              "lora_config.pt.")
    for path in (weights, config):
        _refuse_existing(path, overwrite, "folder")
    tensors, settings = lora_tensors(lora, torch.float32)
    if not settings:
        raise ValueError(f"{lora.path} mixes ranks or alphas across modules; the official lora_config.pt holds one "
                         "rank and one alpha")
    parts = sorted({k.split(".", 1)[0] for k in tensors}, key=PART_ORDER.index)
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    with atomic_write(weights, overwrite, what="the official LoRA weights") as tmp:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        del buffer
        # target_modules: the official inference script puts LoRA layers into these parts of the pipeline
        settings = {"rank": settings["rank"], "alpha": settings["alpha"], "target_modules": parts,
                    WEIGHTS_DIGEST: file_digest(tmp)}
        save_torch(settings, config, overwrite, what="the official LoRA config")  # first: the weights commit the pair
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mova_model.lora_save",
        description="Write a MOVA LoRA (.safetensors or .pt) as the official folder: lora_weights.pt + lora_config.pt.")
    parser.add_argument("lora", help="the LoRA file (e.g. ComfyUI/models/loras/my_mova_lora.safetensors)")
    parser.add_argument("folder",
                        help="output folder (created); give it to MOVA's scripts as --lora_path or resume_from")
    parser.add_argument("--overwrite", action="store_true", help="replace lora_weights.pt / lora_config.pt there")
    args = parser.parse_args(argv)
    try:
        lora = read_lora(args.lora)
        out = save_official_folder(lora, args.folder, overwrite=args.overwrite)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {out.with_name(OFFICIAL_CONFIG)} ({lora.summary()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
