"""The one attention entry point: every attention in MOVA goes through ``attention``.

The kernel behind it is a named *backend*, chosen with ``use_attention_backend`` (a context
manager) or ``set_attention_backend``:

- ``sdpa``: torch's scaled_dot_product_attention, torch picks the kernel (the default);
- ``sdpa_cudnn`` / ``sdpa_flash``: the same call with torch held to its cuDNN or flash kernel;
- ``flash3``: FlashAttention-3 (``flash_attn_interface``, Hopper GPUs);
- ``sage``: SageAttention (``sageattention``; int8 QK, CUDA only);
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


def _flash3(q, k, v):
    from flash_attn_interface import flash_attn_func

    out = flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out


def _sage(q, k, v):
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


# name -> (function, python module it needs or None, how to install it, runs on the CPU)
_BACKENDS: dict[str, tuple[Backend, str | None, str, bool]] = {
    "sdpa": (_sdpa, None, "", True),
    "sdpa_cudnn": (_sdpa_with("CUDNN_ATTENTION"), None, "", False),
    "sdpa_flash": (_sdpa_with("FLASH_ATTENTION"), None, "", False),
    "flash3": (_flash3, "flash_attn_interface",
               "build FlashAttention-3 from the 'hopper' folder of Dao-AILab/flash-attention "
               "(`cd hopper && python setup.py install`); it needs a Hopper GPU (H100/H200)", False),
    "sage": (_sage, "sageattention", "`pip install sageattention` (it needs a CUDA GPU and triton)", False),
}
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
    _, module, _, cpu = _BACKENDS[name]
    if module is not None and importlib.util.find_spec(module) is None:
        return False
    if device is not None and torch.device(device).type != "cuda" and not cpu:
        return False
    return True


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
    _, module, install, cpu = _BACKENDS[name]
    if module is not None and importlib.util.find_spec(module) is None:
        raise RuntimeError(f"attention backend {name!r} needs the Python module {module!r}, which is not "
                           f"installed: {install}; or choose 'auto' / 'sdpa'")
    if device is not None and torch.device(device).type != "cuda" and not cpu:
        raise RuntimeError(f"attention backend {name!r} runs on CUDA GPUs only, and the model runs on "
                           f"{torch.device(device)}; choose 'auto' or 'sdpa'")
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
