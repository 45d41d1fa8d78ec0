"""The one attention entry point: every attention in MOVA goes through ``attention``.

The kernel behind it is a named *backend*, chosen with ``use_attention_backend`` (a context
manager) or ``set_attention_backend``:

- ``sdpa``: torch's scaled_dot_product_attention, torch picks the kernel (the default);
- ``sdpa_cudnn`` / ``sdpa_flash``: the same call with torch held to its cuDNN or flash kernel;
- ``flash3``: FlashAttention-3 (``flash_attn_interface`` from its 'hopper' build, or the forward-only
  ``fa3_fwd_interface`` of the ``fa3-fwd`` wheel; Hopper GPUs, compute capability 9.x);
- ``sage``: SageAttention (``sageattention``: version 1 is int8 QK in triton, version 2 adds CUDA kernels
  with fp8 PV on Ada/Hopper; CUDA GPUs of compute capability 8.0 or newer);
- ``auto``: the fastest of these that runs on the tensors' device (see ``AUTO_ORDER``);
- any name a host registers with ``register_attention_backend`` (the ComfyUI layer registers
  ``comfy``, ComfyUI's own optimized attention).

A backend is a function (q, k, v) -> out on tensors laid out [B, L, H, D].
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Callable

import torch
import torch.nn.functional as F

Backend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _sdpa(q, k, v):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _sdpa_with(kernel: str) -> Backend:
    def run(q, k, v):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(getattr(SDPBackend, kernel)):
            return _sdpa(q, k, v)
    return run


FLASH3_MODULES = ("flash_attn_interface", "fa3_fwd_interface")


def flash3_function():
    """FlashAttention-3's ``flash_attn_func`` from the first of ``FLASH3_MODULES`` that is installed."""
    module = next(m for m in FLASH3_MODULES if importlib.util.find_spec(m) is not None)
    return importlib.import_module(module).flash_attn_func


def _flash3(q, k, v):
    out = flash3_function()(q, k, v)
    return out[0] if isinstance(out, tuple) else out


def _sage(q, k, v):
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


# name -> (function, python modules it needs (any one of them) or None, how to install it, runs on the CPU)
_BACKENDS: dict[str, tuple[Backend, tuple[str, ...] | None, str, bool]] = {
    "sdpa": (_sdpa, None, "", True),
    "sdpa_cudnn": (_sdpa_with("CUDNN_ATTENTION"), None, "", False),
    "sdpa_flash": (_sdpa_with("FLASH_ATTENTION"), None, "", False),
    "flash3": (_flash3, FLASH3_MODULES,
               "build FlashAttention-3 from the 'hopper' folder of Dao-AILab/flash-attention "
               "(`cd hopper && python setup.py install`), or install the forward-only `fa3-fwd` wheel; "
               "it needs a Hopper GPU (H100/H200)", False),
    "sage": (_sage, ("sageattention",), "`pip install sageattention` (it needs a CUDA GPU and triton)", False),
}
BUILT_IN_BACKENDS = tuple(_BACKENDS)  # before any host registers its own
# the GPUs a kernel runs on: (lowest, highest) CUDA compute capability, both included
_CAPABILITY = {"flash3": ((9, 0), (9, 9)), "sage": ((8, 0), (99, 0)), "sdpa_cudnn": ((8, 0), (99, 0))}
_GPU_NAMES = {"flash3": "Hopper GPUs (H100/H200, compute capability 9.x)",
              "sage": "GPUs of compute capability 8.0 or newer (Ampere, Ada, Hopper, Blackwell)",
              "sdpa_cudnn": "GPUs of compute capability 8.0 or newer"}


def _installed(modules: tuple[str, ...] | None) -> bool:
    return modules is None or any(importlib.util.find_spec(m) is not None for m in modules)


def kernel_fits(name: str, capability: tuple[int, int] | None) -> bool:
    """Whether backend ``name`` runs on a CUDA GPU of compute ``capability`` (None: not a CUDA device)."""
    if capability is None or name not in _CAPABILITY:
        return True
    low, high = _CAPABILITY[name]
    return low <= tuple(capability) <= high


def _capability(device) -> tuple[int, int] | None:
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)
# What ``auto`` tries on a CUDA device, first that is importable wins; on other devices: sdpa.
AUTO_ORDER = ("flash3", "sdpa")

_current = "sdpa"


_auto_first: list[str] = []  # hosts' backends that ``auto`` prefers (on every device they run on)


def register_attention_backend(name: str, function: Backend, cpu: bool = True, prefer_in_auto: bool = False) -> None:
    """Make ``function`` (q, k, v [B,L,H,D] -> [B,L,H,D]) selectable as ``name``; with
    ``prefer_in_auto`` it is what ``auto`` picks wherever it runs (ComfyUI registers its own attention so)."""
    _BACKENDS[name] = (function, None, "", cpu)
    if prefer_in_auto and name not in _auto_first:
        _auto_first.insert(0, name)


def attention_backends() -> list[str]:
    """Every backend name, with ``auto`` first."""
    return ["auto", *_BACKENDS]


def is_available(name: str, device: torch.device | str | None = None) -> bool:
    """True when backend ``name`` can run on ``device`` (its module importable, CUDA where needed)."""
    if name == "auto":
        return True
    if name not in _BACKENDS:
        return False
    _, modules, _, cpu = _BACKENDS[name]
    if not _installed(modules):
        return False
    if device is not None and torch.device(device).type != "cuda" and not cpu:
        return False
    return device is None or kernel_fits(name, _capability(device))


def resolve_attention_backend(name: str, device: torch.device | str | None = None) -> str:
    """The concrete backend ``name`` stands for on ``device``; a clear error when it cannot run there."""
    if name == "auto":
        for preferred in _auto_first:
            if is_available(preferred, device):
                return preferred
        on_cuda = device is not None and torch.device(device).type == "cuda"
        if not on_cuda:
            return "sdpa"
        return next(n for n in AUTO_ORDER if is_available(n, device))
    if name not in _BACKENDS:
        hint = " ('comfy' exists only inside ComfyUI)" if name == "comfy" else ""
        raise ValueError(f"attention backend {name!r} is unknown{hint}; choose one of "
                         f"{', '.join(attention_backends())}")
    _, modules, install, cpu = _BACKENDS[name]
    if not _installed(modules):
        needs = " or ".join(repr(m) for m in modules)
        raise RuntimeError(f"attention backend {name!r} needs the Python module {needs}, which is not "
                           f"installed: {install}; or choose 'auto' / 'sdpa'")
    if device is not None and torch.device(device).type != "cuda" and not cpu:
        raise RuntimeError(f"attention backend {name!r} runs on CUDA GPUs only, and the model runs on "
                           f"{torch.device(device)}; choose 'auto' or 'sdpa'")
    capability = None if device is None else _capability(device)
    if not kernel_fits(name, capability):
        raise RuntimeError(f"attention backend {name!r} runs on {_GPU_NAMES[name]}; this GPU has compute "
                           f"capability {capability[0]}.{capability[1]}: choose 'auto' or 'sdpa'")
    return name


def set_attention_backend(name: str, device: torch.device | str | None = None) -> str:
    """Route every MOVA attention through ``name`` (resolved for ``device``); returns the previous one."""
    global _current
    previous, _current = _current, resolve_attention_backend(name, device)
    return previous


@contextlib.contextmanager
def use_attention_backend(name: str, device: torch.device | str | None = None):
    """Run the enclosed code with backend ``name`` (resolved for ``device``), then restore the previous one."""
    previous = set_attention_backend(name, device)
    try:
        yield _current
    finally:
        set_attention_backend(previous)


def current_attention_backend() -> str:
    return _current


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Unmasked multi-head attention: q [B,Lq,H*D], k/v [B,Lk,H*D] -> [B,Lq,H*D]."""
    b, lq, c = q.shape
    d = c // num_heads
    q = q.view(b, lq, num_heads, d)
    k = k.view(b, k.shape[1], num_heads, d)
    v = v.view(b, v.shape[1], num_heads, d)
    out = _BACKENDS[_current][0](q, k, v)
    return out.reshape(b, lq, c)


def sdpa_kernel_names(device: torch.device | str, dtype: torch.dtype, num_heads: int, head_dim: int,
                      tokens: int = 256) -> list[str]:
    """Which kernels the current backend runs for an attention of this head layout on ``device``: the
    attention-like op and kernel names the torch profiler records for one small call."""
    device = torch.device(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    q = torch.randn(1, tokens, num_heads * head_dim, device=device, dtype=dtype)
    with torch.profiler.profile(activities=activities) as prof:
        attention(q, q, q, num_heads)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    words = ("attention", "sdpa", "fmha", "flash", "sage", "attn")
    names = {e.key for e in prof.key_averages() if any(w in e.key.lower() for w in words)}
    # the innermost names say most: drop wrappers whose name another entry extends
    return sorted(n for n in names if n != "aten::scaled_dot_product_attention") or sorted(names)
