"""MOVA Parallel node: chooses the GPUs and the parallel mode; its options output carries them to the sampler."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..comfy_io import schema
from ..handles import SamplerSettings
from ..input_values import checked_inputs
from . import spec
from .setup import gpu_count, make_setup


class MovaParallel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.PARALLEL)

    @classmethod
    def validate_inputs(cls, devices: str, mode: str, shard_weights: bool, swap_blocks: int,
                        keep_loaded: bool) -> bool | str:
        """At queue time: devices that exist and a mode that fits their number."""
        try:
            make_setup(devices, mode, shard_weights, swap_blocks, keep_loaded, gpu_count())
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    @checked_inputs(spec.PARALLEL)
    def execute(cls, devices: str, mode: str, shard_weights: bool, swap_blocks: int, keep_loaded: bool,
                options: SamplerSettings | None = None) -> io.NodeOutput:
        if options is not None and not isinstance(options, SamplerSettings):
            raise ValueError("options: expected the output of MOVA Sampler Options")
        setup = make_setup(devices, mode, shard_weights, swap_blocks, keep_loaded, gpu_count())
        return io.NodeOutput(dataclasses.replace(options or SamplerSettings(), parallel=setup))
