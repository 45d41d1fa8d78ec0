"""MOVA Text Encode node: a prompt through ComfyUI's UMT5-XXL CLIP, encoded as the official pipeline does."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from .. import spec
from ..comfy_io import schema, show_text
from ..input_values import checked_inputs
from .text import encode_prompt

log = logging.getLogger(__name__)


class MovaTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.TEXT_ENCODE, hidden=[io.Hidden.unique_id])

    @classmethod
    @checked_inputs(spec.TEXT_ENCODE)
    def execute(cls, text: str, clip) -> io.NodeOutput:
        conditioning, warnings = encode_prompt(clip, text)
        if not warnings:
            return io.NodeOutput(conditioning)
        report = "\n".join(f"warning: {w}" for w in warnings)
        for line in warnings:
            log.warning("MOVA Text Encode: %s", line)
        show_text(cls.hidden.unique_id, report)
        return io.NodeOutput(conditioning, ui=ui.PreviewText(report))
