"""Writing a MOVA component as a .gguf file, one tensor at a time (``gguf.GGUFWriter``).

Which tensors are quantised follows the fp8 rule of the safetensors converter (``is_fp8_target``): the 2-D Linear
weights of the transformer blocks and the bridge's conditioners, which hold almost all the bytes. Norms, biases,
modulation tables, embeddings and heads keep their precision (1-D tensors F32, the rest BF16), as ComfyUI-GGUF's
files do. A weight whose rows do not split into whole blocks of the asked type falls back to the nearest type
with blocks of 32 (Q6_K -> Q8_0, Q5_K -> Q5_0, Q4_K -> Q4_0), then to BF16; real MOVA widths (1536, 5120,
8960, 13824) split into K blocks of 256, only tiny test models fall back.

Q8_0, Q5_0 and Q4_0 are quantised by the ``gguf`` library itself; the K types by our torch quantiser
(``kquants``; the library has none for them). The caller makes the write atomic (``files.atomic_write``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..weights.quantize import is_fp8_target
from .dequant import TYPES
from .files import ARCHITECTURE, SHAPE_PREFIX
from .kquants import quantize_q4_k, quantize_q5_k, quantize_q6_k

# --dtype of the converter -> the GGUF type of the quantised weights
FORMATS = {"gguf_q8_0": "Q8_0", "gguf_q6_k": "Q6_K", "gguf_q5_k": "Q5_K", "gguf_q4_k": "Q4_K"}
FALLBACK = {"Q6_K": "Q8_0", "Q5_K": "Q5_0", "Q4_K": "Q4_0"}
_TORCH_QUANTIZERS = {"Q4_K": quantize_q4_k, "Q5_K": quantize_q5_k, "Q6_K": quantize_q6_k}
MAX_DIMS = 4  # GGUF's limit; larger tensors are stored as [first, rest] with their shape in the metadata


@dataclass(frozen=True)
class GGUFSpec:
    """One tensor of the output: model key, shape (torch order) and GGUF type name."""

    key: str
    shape: tuple[int, ...]
    type_name: str

    @property
    def stored_shape(self) -> tuple[int, ...]:
        if len(self.shape) <= MAX_DIMS:
            return self.shape
        return (self.shape[0], math.prod(self.shape[1:]))

    @property
    def nbytes(self) -> int:
        qtype = TYPES[self.type_name]
        return math.prod(self.stored_shape) // qtype.block_size * qtype.type_size


def tensor_type(key: str, shape: tuple[int, ...], quantized: str) -> str:
    """The GGUF type ``key`` is written in for weights quantised as ``quantized``."""
    if is_fp8_target(key, shape):
        for candidate in (quantized, FALLBACK.get(quantized)):
            if candidate and shape[-1] % TYPES[candidate].block_size == 0:
                return candidate
    return "F32" if len(shape) <= 1 else "BF16"


def encode(tensor: torch.Tensor, type_name: str) -> np.ndarray:
    """The bytes (or float values) of ``tensor`` in ``type_name``, as the numpy array GGUFWriter writes."""
    if type_name == "F32":
        return tensor.detach().to(torch.float32).cpu().contiguous().numpy()
    if type_name == "F16":
        return tensor.detach().to(torch.float16).cpu().contiguous().numpy()
    if type_name == "BF16":
        return tensor.detach().to(torch.bfloat16).cpu().contiguous().view(torch.uint8).numpy()
    rows = tensor.detach().to(torch.float32).reshape(-1, tensor.shape[-1])
    if type_name in _TORCH_QUANTIZERS:
        blocks = _TORCH_QUANTIZERS[type_name](rows.reshape(-1, TYPES[type_name].block_size))
        return blocks.reshape(rows.shape[0], -1).cpu().numpy()
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    return quantize(rows.cpu().numpy(), GGMLQuantizationType[type_name])


def write_gguf(path: Path, specs: list[GGUFSpec], tensors, metadata: dict[str, str], progress=None) -> None:
    """Write ``specs`` to ``path``, taking each tensor from the ``tensors`` iterator of (key, float tensor) in
    the order of ``specs``; ``metadata``: text entries (mova.component, mova.config, ...)."""
    from gguf import GGMLQuantizationType, GGUFWriter

    writer = GGUFWriter(path, ARCHITECTURE)
    try:
        for name, value in metadata.items():
            writer.add_string(name, value)
        for spec in specs:
            if spec.stored_shape != spec.shape:
                writer.add_array(SHAPE_PREFIX + spec.key, list(spec.shape))
            writer.add_tensor_info(spec.key, spec.stored_shape, np.dtype(np.float32), spec.nbytes,
                                   raw_dtype=GGMLQuantizationType[spec.type_name])
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        order = iter(specs)
        written = 0
        for key, tensor in tensors:
            spec = next(order, None)
            if spec is None or spec.key != key:
                raise ValueError(f"tensor {key} came where {spec.key if spec else 'no tensor'} was planned")
            data = encode(tensor.reshape(spec.stored_shape), spec.type_name)
            if data.nbytes != spec.nbytes:
                raise ValueError(f"{key}: {data.nbytes} bytes encoded where {spec.nbytes} were planned")
            writer.write_tensor_data(data)
            written += 1
            if progress is not None:
                progress(spec.nbytes)
        if written != len(specs):
            raise ValueError(f"{len(specs) - written} planned tensors were not given")
        writer.flush()
    finally:
        writer.close()
