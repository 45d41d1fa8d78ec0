"""Which component a checkpoint holds, and its config: from config.json, file metadata, or shapes."""

from __future__ import annotations

import json
import math
import re

from ..configs import DEFAULT_HEAD_DIM, BridgeConfig, DACConfig, DiTConfig, config_from_dict
from .checkpoint import Checkpoint, CheckpointError

KIND_NAMES = {
    "video_dit": "a MOVA video expert (video_dit / video_dit_2)",
    "audio_dit": "the MOVA audio DiT (audio_dit)",
    "dual_tower_bridge": "the MOVA dual-tower bridge (dual_tower_bridge)",
    "audio_vae": "the MOVA audio VAE (audio_vae, DAC)",
}
METADATA_KIND = "mova.component"
METADATA_CONFIG = "mova.config"
METADATA_EXPERT = "mova.expert"   # "high" / "low" for the video experts of converted files


def detect_kind(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """'video_dit', 'audio_dit', 'dual_tower_bridge', 'audio_vae', or None for something else."""
    patch = shapes.get("patch_embedding.weight")
    if patch is not None and "head.head.weight" in shapes:
        return "video_dit" if len(patch) == 5 else "audio_dit" if len(patch) == 3 else None
    if any(k.startswith("audio_to_video_conditioners.") for k in shapes):
        return "dual_tower_bridge"
    if any(k.startswith("decoder.model.") for k in shapes) and any(k.startswith("post_quant_conv.") for k in shapes):
        return "audio_vae"
    return None


# Files that are certainly no MOVA component, told apart by their keys (prefixes as ComfyUI and diffusers store
# them, after ``strip_prefix``): what the loaders' lists leave out and what their messages call them.
OTHER_FAMILIES = (
    ("a Wan video VAE (not a MOVA component)", ("encoder.downsamples.", "decoder.upsamples.")),
    ("a diffusers VAE (not a MOVA component)", ("encoder.down_blocks.", "decoder.up_blocks.")),
    ("an image VAE (not a MOVA component)", ("encoder.down.", "decoder.up.", "first_stage_model.")),
    ("a text encoder (not a MOVA component)", ("encoder.block.0.layer.", "shared.weight", "text_model.",
                                              "transformer.text_model.", "model.layers.", "embed_tokens.",
                                              "encoder.embed_tokens.", "model.embed_tokens.")),
    ("a diffusion model of another family (not a MOVA component)", (
        "double_blocks.", "single_blocks.", "input_blocks.", "middle_block.", "joint_blocks.", "transformer_blocks.",
        "single_transformer_blocks.", "noise_refiner.", "x_embedder.", "vace_blocks.")),
)
LORA_MARKERS = ("lora_A", "lora_B", "lora_up", "lora_down", "lora.up", "lora.down", "hada_w", "lokr_w")


def _video_dit_kind(shapes) -> str | None:
    """None for a MOVA video expert; what it is for a Wan video model MOVA cannot use (same block layout)."""
    if any(k.startswith("img_emb.") for k in shapes):
        return "a Wan image-to-video model with a CLIP image input (not a MOVA video expert)"
    if any(k.startswith("vace_") for k in shapes):
        return "a Wan VACE model (not a MOVA video expert)"
    patch, head = shapes["patch_embedding.weight"], shapes["head.head.weight"]
    out_dim = head[0] // max(1, math.prod(patch[2:]))
    if patch[1] != 2 * out_dim + 4:  # MOVA: noisy latents + first-frame latents + 4 mask channels
        return (f"a Wan video model with {patch[1]} input channels (not a MOVA video expert, which takes "
                f"{2 * out_dim + 4})")
    return None


def identify(shapes: dict[str, tuple[int, ...]]) -> tuple[str | None, str | None]:
    """(MOVA kind, None) for a MOVA component; (None, what it is) for a file that is certainly something else
    (a VAE, a text encoder, a LoRA, another diffusion model); (None, None) when the keys say neither."""
    kind = detect_kind(shapes)
    if kind == "video_dit":
        other = _video_dit_kind(shapes)
        return (None, other) if other else (kind, None)
    if kind:
        return kind, None
    if shapes and sum(any(m in k for m in LORA_MARKERS) for k in shapes) * 2 >= len(shapes):
        return None, "a LoRA (not a MOVA component)"
    for what, prefixes in OTHER_FAMILIES:
        if any(k.startswith(prefixes) for k in shapes):
            return None, what
    return None, None


def describe(shapes: dict[str, tuple[int, ...]]) -> str:
    kind, other = identify(shapes)
    if kind:
        return KIND_NAMES[kind]
    if other:
        return other
    return "no MOVA component (unknown keys, e.g. " + ", ".join(sorted(shapes)[:3]) + ")"


def check_kind(ckpt: Checkpoint, want: str) -> None:
    """Raise a CheckpointError when ``ckpt`` holds another component than ``want``."""
    got = detect_kind(ckpt.shapes())
    if got == want:
        return
    raise CheckpointError(
        f"{ckpt.name} holds {describe(ckpt.shapes())}, but {KIND_NAMES[want]} was asked for: "
        f"pick the {want} file of the MOVA release for this input."
    )


def _count_blocks(shapes, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def dit_config_from_shapes(shapes, head_dim: int = DEFAULT_HEAD_DIM) -> DiTConfig:
    """DiT config from tensor shapes (the head count comes from ``head_dim``, 128 by default)."""
    patch = shapes["patch_embedding.weight"]
    dim, in_dim, kernel = patch[0], patch[1], tuple(patch[2:])
    return DiTConfig(
        dim=dim,
        num_heads=max(1, dim // head_dim),
        num_layers=_count_blocks(shapes, "blocks."),
        ffn_dim=shapes["blocks.0.ffn.0.weight"][0],
        in_dim=in_dim,
        out_dim=shapes["head.head.weight"][0] // max(1, math.prod(kernel)),
        patch_size=kernel,
        text_dim=shapes["text_embedding.0.weight"][1],
        freq_dim=shapes["time_embedding.0.weight"][1],
    )


def bridge_config_from_shapes(shapes, head_dim: int = DEFAULT_HEAD_DIM) -> BridgeConfig:
    """Bridge config from shapes; tower layer counts are taken as the number of interacting layers."""
    layers = _count_blocks(shapes, "audio_to_video_conditioners.")
    q = shapes["audio_to_video_conditioners.0.inner.q.weight"]
    k = shapes["audio_to_video_conditioners.0.inner.k.weight"]
    return BridgeConfig(visual_layers=layers, audio_layers=layers, visual_hidden_dim=q[0],
                        audio_hidden_dim=k[1], head_dim=head_dim)


def dac_config_from_shapes(shapes, sample_rate: int = 48000) -> DACConfig:
    """DAC config from shapes: strides are half the down/up-sampling kernel sizes."""
    n_enc = _count_blocks(shapes, "encoder.block.") - 3
    enc_rates = tuple(_kernel(shapes, f"encoder.block.{i + 1}.block.4") // 2 for i in range(n_enc))
    n_dec = _count_blocks(shapes, "decoder.model.") - 3
    dec_rates = tuple(_kernel(shapes, f"decoder.model.{i + 1}.block.1") // 2 for i in range(n_dec))
    return DACConfig(
        encoder_dim=_shape(shapes, "encoder.block.0")[0],
        encoder_rates=enc_rates,
        latent_dim=_shape(shapes, "post_quant_conv")[1],
        decoder_dim=_shape(shapes, "decoder.model.0")[0],
        decoder_rates=dec_rates,
        sample_rate=sample_rate,
    )


def _shape(shapes, module: str):
    return shapes.get(module + ".weight") or shapes[module + ".weight_v"]


def _kernel(shapes, module: str) -> int:
    return _shape(shapes, module)[-1]


_CONFIG_CLASSES = {"video_dit": DiTConfig, "audio_dit": DiTConfig,
                   "dual_tower_bridge": BridgeConfig, "audio_vae": DACConfig}


# The official classes each component's config.json names (``_class_name``), when it names one.
CONFIG_CLASS_NAMES = {"video_dit": ("WanModel",), "audio_dit": ("WanAudioModel",),
                      "dual_tower_bridge": ("DualTowerConditionalBridge",), "audio_vae": ("DAC",)}


def _config(cls, values, where: str, kind: str):
    """``cls`` from a config mapping read at ``where``; a CheckpointError when it belongs to another model."""
    named = values.get("_class_name") if isinstance(values, dict) else None
    if named is not None and named not in CONFIG_CLASS_NAMES[kind]:
        raise CheckpointError(
            f"{where} describes a {named}, not {KIND_NAMES[kind]} ({' or '.join(CONFIG_CLASS_NAMES[kind])}): "
            "the folder holds another model's config.json; download this component's config.json again."
        )
    try:
        return config_from_dict(cls, values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{where} does not describe {KIND_NAMES[kind]}: {exc}. It belongs to another model or is damaged: "
            "download this component's config.json again."
        ) from exc


def detect_config(ckpt: Checkpoint, kind: str, head_dim: int | None = None):
    """The component's config: config.json beside the weights, else the file's metadata, else shapes."""
    cls = _CONFIG_CLASSES[kind]
    if ckpt.config is not None:
        return _config(cls, ckpt.config, ckpt.config_path or f"the config.json of {ckpt.name}", kind)
    if METADATA_CONFIG in ckpt.metadata:
        where = f"{ckpt.name} (its {METADATA_CONFIG} metadata)"
        try:
            values = json.loads(ckpt.metadata[METADATA_CONFIG])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{where} is not JSON ({exc}): convert the release again.") from exc
        return _config(cls, values, where, kind)
    shapes = ckpt.shapes()
    if kind in ("video_dit", "audio_dit"):
        return dit_config_from_shapes(shapes, head_dim or DEFAULT_HEAD_DIM)
    if kind == "dual_tower_bridge":
        return bridge_config_from_shapes(shapes, head_dim or DEFAULT_HEAD_DIM)
    return dac_config_from_shapes(shapes)
