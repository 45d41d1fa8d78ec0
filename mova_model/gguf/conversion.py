"""One component of a release into a .gguf file (``python -m mova_model.convert --dtype gguf_*``): plan, write
one tensor at a time, verify by reading the file back.

Verification re-reads the written file with our reader (which the loaders use) and checks its keys, types,
shapes and metadata, then that every tensor's bytes equal the source encoded again (quantisation is
deterministic) and dequantise to finite values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..files.safetensors_stream import RawReader
from ..weights.checkpoint import Checkpoint, CheckpointError
from .files import open_gguf
from .write import FORMATS, GGUFSpec, encode, tensor_type, write_gguf


def plan_gguf(ckpt: Checkpoint, fmt: str) -> list[GGUFSpec]:
    """Every tensor of the output, in the source's key order, with its GGUF type."""
    quantized = FORMATS[fmt]
    return [GGUFSpec(key, tuple(shape), tensor_type(key, tuple(shape), quantized))
            for key, shape in ckpt.shapes().items()]


def _sources(ckpt: Checkpoint, specs: list[GGUFSpec]):
    reader = RawReader(ckpt)
    for spec in specs:
        yield spec.key, reader.get(spec.key)


def write_part(ckpt: Checkpoint, specs: list[GGUFSpec], path: Path, metadata: dict, progress=None) -> None:
    write_gguf(path, specs, _sources(ckpt, specs), metadata, progress)


def verify_part(path: Path, ckpt: Checkpoint, specs: list[GGUFSpec], metadata: dict, progress=None) -> None:
    def fail(what: str):
        raise CheckpointError(f"{path} failed verification: {what}. Convert again (the disk may be full or faulty).")

    written = open_gguf(path)
    if written.keys() != [s.key for s in specs]:
        fail("its tensors differ from the plan")
    for spec in specs:
        if written.dtypes()[spec.key] != spec.type_name or written.shapes()[spec.key] != spec.shape:
            fail(f"{spec.key} is {written.dtypes()[spec.key]} {written.shapes()[spec.key]}, planned "
                 f"{spec.type_name} {spec.shape}")
    if {k: v for k, v in written.metadata.items() if k in metadata} != metadata:
        fail("its metadata differs")
    by_key = {s.key: s for s in specs}
    for key, source in _sources(ckpt, specs):
        spec = by_key[key]
        stored = written.get(key)
        expected = encode(source.reshape(spec.stored_shape), spec.type_name)
        if not np.array_equal(stored.contiguous().view(torch.uint8).numpy().reshape(-1),
                              expected.view(np.uint8).reshape(-1)):
            fail(f"{key} differs from the source written as {spec.type_name}")
        if not bool(torch.isfinite(written.dequantized(key)).all()):
            fail(f"{key} holds values that are not finite")
        if progress is not None:
            progress(spec.nbytes)
