"""Makes the official MOVA code importable on a CPU-only machine, for the reference tools in this folder.

The official code imports packages that cannot run here or are not needed for a float32 CPU run: yunchang
(sequence parallelism), descript-audiotools (audio file helpers; only its base classes are touched), mmengine
(config files and registries), torchvision (one picture-to-tensor helper), bitsandbytes (8-bit optimizers) and ``kernels`` (which downloads FlashAttention
at import time). ``install_stubs`` puts small stand-ins for the first three into ``sys.modules``, makes the last
two unavailable, and puts the official checkout first on ``sys.path``. diffusers, transformers and accelerate
must be installed (the official requirements; see tests/support/tools/README.md for the versions used).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


class _Registry:
    """mmengine's Registry as far as the official code uses it: register_module, get, build(cfg, default_args)."""

    def __init__(self, name: str, locations=None, **_):
        self.name, self.modules = name, {}

    def register_module(self, name=None, module=None, force=False):
        def add(obj):
            self.modules[name or obj.__name__] = obj
            return obj
        return add(module) if module is not None else add

    def get(self, name):
        return self.modules[name]

    def build(self, cfg, default_args=None):
        args = dict(cfg)
        kind = args.pop("type")
        args.update(default_args or {})
        return self.get(kind)(**args)


class _AttnType:
    FA = "fa"
    FA3 = "fa3"
    TORCH = "torch"


def _unavailable(*_, **__):
    raise RuntimeError("a stand-in of the reference tools: sequence parallelism is not available here")


def _pil_to_tensor(picture) -> torch.Tensor:
    """A PIL picture as a uint8 tensor [C, H, W] (torchvision's pil_to_tensor)."""
    import numpy as np
    array = np.asarray(picture)
    return torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], -1).permute(2, 0, 1)


def install_stubs(official: str | Path) -> None:
    """Stand-ins for yunchang / audiotools / mmengine, no bitsandbytes and no kernels; ``official`` on sys.path."""
    official = Path(official).resolve()
    if not (official / "mova" / "diffusion" / "pipelines" / "mova_lora.py").is_file():
        raise SystemExit(f"{official} is not a checkout of OpenMOSS/MOVA (no mova/diffusion/pipelines/mova_lora.py)")
    import diffusers  # noqa: F401  (they look for torchvision when imported: before its stand-in exists)
    import transformers  # noqa: F401
    _module("yunchang", LongContextAttention=None, set_seq_parallel_pg=_unavailable)
    _module("yunchang.kernels", AttnType=_AttnType)
    audiotools = _module("audiotools", AudioSignal=type("AudioSignal", (), {}))
    audiotools.ml = _module("audiotools.ml", BaseModel=type("BaseModel", (torch.nn.Module,), {}))
    torchvision = _module("torchvision")
    torchvision.transforms = _module("torchvision.transforms")
    torchvision.transforms.functional = _module("torchvision.transforms.functional", pil_to_tensor=_pil_to_tensor)
    mmengine = _module("mmengine")
    mmengine.registry = _module("mmengine.registry", Registry=_Registry)
    mmengine.config = _module("mmengine.config", Config=dict, DictAction=object)
    # mova.engine.optimizers registers bitsandbytes' 8-bit optimizers at import: give it stand-ins for that
    # import only, then make bitsandbytes unavailable, so the low-resource trainer falls back to torch's AdamW
    bnb = _module("bitsandbytes")
    bnb.optim = _module("bitsandbytes.optim", Adam8bit=_unavailable, AdamW8bit=_unavailable)
    sys.modules["kernels"] = None  # its get_kernel downloads (and raises ValueError offline)
    for name in ("deepspeed", "flash_attn", "flash_attn_interface", "sageattention", "wandb"):
        sys.modules.setdefault(name, None)
    sys.path.insert(0, str(official))
    import mova.engine.optimizers  # noqa: F401  (registers torch's optimizers under their names)
    sys.modules["bitsandbytes"] = sys.modules["bitsandbytes.optim"] = None
