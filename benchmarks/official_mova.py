"""The official MOVA modules (OpenMOSS/MOVA), imported from a local copy for side-by-side runs (benchmark support).

Nothing of the official code is kept in this repository: ``load_official(DIR)`` imports its model and pipeline
modules from DIR (a checkout of OpenMOSS/MOVA). Their imports reach for packages a benchmark does not need
(yunchang's context parallelism, audiotools, mmengine's registry, diffusers' model/pipeline base classes,
transformers' T5 classes, ftfy, tqdm); those that are missing are replaced by small stand-ins that only let the
modules import. ``kernels`` is made unavailable (its ``get_kernel`` would try to download FlashAttention-3).
The forward path itself is the official code, unchanged: blocks, bridge, ``MOVA.inference_single_step``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__path__ = []  # a package, so that submodules can be stand-ins too
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)  # torch.compile looks for it
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


class _Anything:
    """A placeholder class for names that are only annotations or base classes in the official modules."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("a stand-in of the official MOVA import was called: this benchmark does not use it")


class _ModelMixin(nn.Module):
    """Stands in for diffusers' ModelMixin: the forward path only reads ``dtype`` and ``device``."""

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def _passthrough(fn=None, *args, **kwargs):
    return fn if callable(fn) else (lambda f: f)


def _install_stand_ins() -> list[str]:
    """Stand-ins for the packages the official modules import but this benchmark never runs; returns their names."""
    used = []
    sys.modules["kernels"] = None  # `from kernels import get_kernel` raises ModuleNotFoundError: no download
    if importlib.util.find_spec("yunchang") is None:
        attn_type = type("AttnType", (), {"FA": "fa", "FA3": "fa3", "TORCH": "torch", "SAGE_FP8": "sage"})
        _module("yunchang", LongContextAttention=None)
        _module("yunchang.kernels", AttnType=attn_type)
        used.append("yunchang")
    if importlib.util.find_spec("audiotools") is None:
        _module("audiotools", AudioSignal=_Anything)
        _module("audiotools.ml", BaseModel=type("BaseModel", (nn.Module,), {}))
        used.append("audiotools")
    if importlib.util.find_spec("mmengine") is None:
        class Registry:
            def __init__(self, *args, **kwargs):
                pass

            def register_module(self, *args, **kwargs):
                return lambda cls: cls
        _module("mmengine")
        _module("mmengine.registry", Registry=Registry)
        used.append("mmengine")
    if importlib.util.find_spec("diffusers") is None:
        class ConfigMixin:
            def register_to_config(self, **kwargs):
                pass
        _module("diffusers")
        _module("diffusers.configuration_utils", ConfigMixin=ConfigMixin, register_to_config=_passthrough)
        _module("diffusers.models")
        _module("diffusers.models.modeling_utils", ModelMixin=_ModelMixin)
        _module("diffusers.models.autoencoders", AutoencoderKLWan=_Anything)
        _module("diffusers.image_processor", PipelineImageInput=_Anything)
        _module("diffusers.pipelines", DiffusionPipeline=type("DiffusionPipeline", (nn.Module,), {}))
        _module("diffusers.utils")
        _module("diffusers.utils.torch_utils", randn_tensor=_Anything)
        _module("diffusers.utils.accelerate_utils", apply_forward_hook=_passthrough)
        _module("diffusers.video_processor", VideoProcessor=_Anything)
        used.append("diffusers")
    if importlib.util.find_spec("tqdm") is None:
        _module("tqdm", tqdm=lambda iterable=None, *args, **kwargs: iterable)
        used.append("tqdm")
    if importlib.util.find_spec("ftfy") is None:
        _module("ftfy", fix_text=lambda text: text)
        used.append("ftfy")
    if importlib.util.find_spec("transformers") is None:
        _module("transformers")
        _module("transformers.models", T5TokenizerFast=_Anything, UMT5EncoderModel=_Anything)
        used.append("transformers")
    else:
        models = importlib.import_module("transformers.models")
        for name in ("T5TokenizerFast", "UMT5EncoderModel"):
            try:
                getattr(models, name)
            except AttributeError:  # a transformers version that moved the name: only an annotation here
                setattr(models, name, _Anything)
                used.append(f"transformers.models.{name}")
    return used


@functools.lru_cache(maxsize=1)
def load_official(directory: str) -> types.SimpleNamespace:
    """The official modules from a checkout of OpenMOSS/MOVA at ``directory`` (its ``mova/`` package)."""
    root = Path(directory).resolve()
    if not (root / "mova" / "diffusion" / "models" / "wan_video_dit.py").is_file():
        raise SystemExit(f"--official {directory}: no mova/diffusion/models/wan_video_dit.py there; give the folder "
                         "of a checkout of OpenMOSS/MOVA (the one holding the 'mova' package)")
    stand_ins = _install_stand_ins()
    sys.path.insert(0, str(root))
    # the pipelines package imports the training pipelines too: import only pipeline_mova from it
    pipelines = types.ModuleType("mova.diffusion.pipelines")
    pipelines.__path__ = [str(root / "mova" / "diffusion" / "pipelines")]
    importlib.import_module("mova.diffusion")
    sys.modules["mova.diffusion.pipelines"] = pipelines
    video = importlib.import_module("mova.diffusion.models.wan_video_dit")
    audio = importlib.import_module("mova.diffusion.models.wan_audio_dit")
    bridge = importlib.import_module("mova.diffusion.models.interactionv2")
    pipeline = importlib.import_module("mova.diffusion.pipelines.pipeline_mova")
    return types.SimpleNamespace(video=video, audio=audio, bridge=bridge, pipeline=pipeline, root=str(root),
                                 stand_ins=stand_ins)


def _video_kwargs(c) -> dict:
    return dict(dim=c.dim, in_dim=c.in_dim, ffn_dim=c.ffn_dim, out_dim=c.out_dim, text_dim=c.text_dim,
                freq_dim=c.freq_dim, eps=c.eps, patch_size=list(c.patch_size), num_heads=c.num_heads,
                num_layers=c.num_layers, has_image_input=False)


def build_official(official, config, state_dicts: dict, device) -> dict:
    """Official video expert, audio DiT and bridge for the pack's ``config`` (a MovaConfig), built without
    memory on the meta device and given the tensors of ``state_dicts`` (shared, not copied). Their RoPE
    tables are made after construction (on the meta device they would be empty)."""
    b = config.bridge
    with torch.device("meta"):
        video = official.video.WanModel(**_video_kwargs(config.video))
        audio = official.audio.WanAudioModel(**_video_kwargs(config.audio), vae_type="dac")
        bridge = official.bridge.DualTowerConditionalBridge(
            visual_layers=b.visual_layers, audio_layers=b.audio_layers, visual_hidden_dim=b.visual_hidden_dim,
            audio_hidden_dim=b.audio_hidden_dim, audio_fps=b.audio_fps, head_dim=b.head_dim,
            interaction_strategy=b.interaction_strategy, apply_cross_rope=b.apply_cross_rope)
    video.freqs = official.video.precompute_freqs_cis_3d(config.video.head_dim)
    audio.freqs = official.audio.precompute_freqs_cis_1d(config.audio.head_dim)
    bridge.rotary = official.bridge.RotaryEmbedding(base=10000.0, dim=b.head_dim, device=device)
    parts = {"video": video, "audio": audio, "bridge": bridge}
    for name, module in parts.items():
        missing, unexpected = module.load_state_dict(state_dicts[name], strict=False, assign=True)
        if missing or unexpected:
            raise RuntimeError(f"official {name}: the pack's keys do not fit: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        module.eval().requires_grad_(False)
        meta = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if meta:
            raise RuntimeError(f"official {name}: tensors left on the meta device: {meta[:5]}")
    return parts


def force_official_attention(official, kernel: str, flash3_function=None) -> None:
    """Make the official ``flash_attention`` take one path: "sdpa" (torch's SDPA; the caller holds it to one
    kernel with ``sdpa_kernel``) or "flash3" (``flash3_function``, the same function the pack calls)."""
    module = official.video
    module.FLASH_ATTN_2_AVAILABLE = False
    module.SAGE_ATTN_AVAILABLE = False
    module.FLASH_ATTN_3_AVAILABLE = kernel == "flash3"
    if kernel == "flash3":
        module.flash_attn_3_func = flash3_function


class _Float32Layers(nn.Module):
    """Runs a Sequential's Linear layers in float32 (CUDA's float32 autocast, which the official time layers
    rely on, does not exist on the CPU)."""

    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.layers = layers

    def forward(self, x):
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                x = nn.functional.linear(x.float(), layer.weight.float(), layer.bias.float())
            else:
                x = layer(x)
        return x


def make_runner(official, parts: dict) -> types.SimpleNamespace:
    """An object with what ``MOVA.inference_single_step`` reads from the pipeline (the audio DiT, the bridge,
    ``forward_dual_tower_dit``), so the official step runs without the text encoder and VAEs."""
    runner = types.SimpleNamespace(audio_dit=parts["audio"], dual_tower_bridge=parts["bridge"],
                                   _pre_forward=lambda model: None)
    runner.forward_dual_tower_dit = functools.partial(official.pipeline.MOVA.forward_dual_tower_dit, runner)
    return runner


def official_step(official, runner, parts: dict, x, audio, context, timestep, fps: float):
    """One official joint forward: (video velocity [B,16,T,h,w], audio velocity [B,C,L])."""
    video = parts["video"]
    emulate = x.device.type != "cuda" and video.patch_embedding.weight.dtype != torch.float32
    saved = []
    if emulate:
        for module in (video, parts["audio"]):
            saved.append((module, module.time_embedding, module.time_projection))
            module.time_embedding = _Float32Layers(module.time_embedding)
            module.time_projection = _Float32Layers(module.time_projection)
    try:
        with torch.no_grad():
            return official.pipeline.MOVA.inference_single_step(
                runner, visual_dit=video, visual_latents=x, audio_latents=audio, context=context,
                timestep=timestep, audio_timestep=timestep, video_fps=fps)
    finally:
        for module, embedding, projection in saved:
            module.time_embedding, module.time_projection = embedding, projection
