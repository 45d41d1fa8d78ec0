"""The cases of the official-LoRA parity checks, shared by test_official_lora.py and the tool that runs the official
code for them (tests/support/tools/make_official_lora_refs.py): the LoRAs (made from seeds, so they need not be stored),
the inputs taken from the golden set, and where the references of a golden set are.

References live in ``tests/support/data/official_lora/`` for the bundled golden set and in ``<golden>/official_lora/`` for
any other (``MOVA_GOLDEN_DIR``); each records a fingerprint of the golden set it was made from.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent / "data"
BUNDLED_GOLDEN = DATA / "golden" / "tiny"
BUNDLED_REFS = DATA / "official_lora"
COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")

# LoRA inference: a random LoRA on the 8-GPU recipe's layers (FFN included), rank 4, alpha 6 (scale 1.5)
INFER_RANK, INFER_ALPHA, INFER_SEED, INFER_GAIN = 4, 6.0, 2501, 0.2
INFER_SCALES = (1.0, 0.5)         # MOVALoRA.set_lora_scale / the LoRA Loader's strengths
SAMPLE_SEED = 25                  # the MOVA Sampler's seed: its noise is handed to the official pipeline
SAMPLE_CFG = 5.0
# one training step of each official trainer from the same random LoRA, rank 1 (small reference files); the
# accelerate trainer's save writes rank 16, alpha 16 into lora_config.pt whatever it trained, so its case keeps
# alpha / rank = 1 (as the 8-GPU recipe's 16 / 16); the low-resource case scales by 1.5
STEP_LORA = {"accelerate": (1, 1.0), "low_resource": (1, 1.5)}   # trainer -> (rank, alpha)
STEP_SEED, STEP_GAIN, STEP_LR = 2502, 0.5, 1e-3
STEP_DRAW_SEED = 2503              # seeds the official trainers' timestep and noise draws (they are recorded)
TRAINERS = {"accelerate": "accelerate", "low_resource": "low_resource"}   # trainer -> recipe layer selection
STEPS = {"high": 0, "low": 1}     # the official global_step: even trains the high-noise expert, odd the low-noise
# round trip: a LoRA trained in the pack (8-GPU layers), run by the official inference pipeline
ROUND_RANK, ROUND_ALPHA, ROUND_SEED, ROUND_STEPS, ROUND_LR = 2, 4.0, 2504, 4, 2e-2


def case_name(scale: float, merged: bool) -> str:
    return f"scale{scale:g}".replace(".", "p") + ("_merged" if merged else "_unmerged")


def golden_fingerprint(golden: Path) -> str:
    """sha256 over the golden set's cases and checkpoint files (names and bytes)."""
    digest = hashlib.sha256()
    files = [golden / "cases.json", golden / "cases.safetensors"]
    files += sorted(p for p in (golden / "checkpoint").rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(golden)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def refs_dir(golden: Path) -> Path:
    """Where the official references of this golden set are (or are to be written)."""
    golden = Path(golden).resolve()
    return BUNDLED_REFS if golden == BUNDLED_GOLDEN.resolve() else golden / "official_lora"


def module_shapes(parts: dict[str, torch.nn.Module], layers: str) -> dict[str, list[tuple[str, int, int]]]:
    """component -> [(module path, out, in)] of the Linear layers the recipe selection ``layers`` chooses."""
    from comfyui_mova.mova_model.lora.recipes import select_layers
    out = {}
    for component in COMPONENTS:
        model = parts[component]
        out[component] = [(name, *model.get_submodule(name).weight.shape) for name in select_layers(model, layers)]
    return out


def random_lora(shapes: dict[str, list[tuple[str, int, int]]], rank: int, seed: int, gain: float
                ) -> dict[str, torch.Tensor]:
    """A LoRA in the official key layout (``<component>.<module>.lora_A.weight`` [r,in], ``lora_B.weight``
    [out,r]), float32, drawn from ``seed``: A ~ N(0, 1/in), B ~ N(0, gain²/r), so B·A is ~gain of a weight."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for component in COMPONENTS:
        for name, out_f, in_f in shapes[component]:
            state[f"{component}.{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) / math.sqrt(in_f)
            state[f"{component}.{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * gain / math.sqrt(rank)
    return state


def step_inputs(tensors: dict) -> dict[str, torch.Tensor]:
    """The batch of the training-step cases, from the golden set: clean video latents (normalised) and audio
    latents (the CFG-5 sampling result), the I2V condition and the positive text states."""
    return {"video": tensors["sample_cfg5_video"], "audio": tensors["sample_cfg5_audio"],
            "condition": tensors["condition"], "text": tensors["context_pos"]}


def read_meta(path: Path) -> dict:
    """The JSON metadata (``info``) of a reference file."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {})["info"])


def train_round_trip_lora(towers, golden_cases: dict, tensors: dict) -> dict[str, torch.Tensor]:
    """A LoRA trained by the pack's train_lora (8-GPU layers) on the golden batch: its state in the official keys."""
    from comfyui_mova.mova_model.configs import DACConfig, SchedulerConfig, config_from_dict
    from comfyui_mova.mova_model.training.dataset import LatentDataset
    from comfyui_mova.mova_model.training.trainer import TrainSettings, train_lora
    c = golden_cases
    dac = config_from_dict(DACConfig, c["audio_vae"])
    batch = step_inputs(tensors)
    dataset = LatentDataset(video=batch["video"], condition=batch["condition"], audio=batch["audio"],
                            text=batch["text"], width=c["width"], height=c["height"], frames=c["num_frames"],
                            fps=c["fps"], sample_rate=dac.sample_rate, hop_length=dac.hop_length,
                            fingerprint="golden round trip")
    settings = TrainSettings(rank=ROUND_RANK, alpha=ROUND_ALPHA, learning_rate=ROUND_LR, steps=ROUND_STEPS,
                             seed=ROUND_SEED, layers="accelerate", gradient_checkpointing=False,
                             offload_activations=False, boundary_ratio=c["boundary_ratio"])
    result = train_lora(towers, dataset, settings, scheduler=config_from_dict(SchedulerConfig, c["scheduler"]))
    return result.state


def write_lora_folder(folder: Path, state: dict, rank: int, alpha: float) -> Path:
    """lora_weights.pt + lora_config.pt, the official LoRA folder (what MOVA's LoRA pipeline reads); returns the
    weights file."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "lora_weights.pt")
    torch.save({"rank": rank, "alpha": alpha, "target_modules": list(COMPONENTS)}, folder / "lora_config.pt")
    return folder / "lora_weights.pt"
