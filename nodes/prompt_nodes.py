"""MOVA Prompt Enhance (a language model writes the caption) and MOVA Prompt Builder (fields -> caption)."""

from __future__ import annotations

import comfy.model_management as mm
from comfy_api.latest import io, ui

from . import spec
from .comfy_io import schema
from .llm_client import Cancelled
from .prompt_builder import build_caption, speech_lines
from .prompt_enhance import EnhanceSettings, enhance_prompt
from .prompt_image import image_data_url


class MovaPromptEnhance(io.ComfyNode):
    # No fingerprint_inputs: ComfyUI's cache keys on the inputs (never the key: it is no input), so a re-queue with
    # the same inputs and seed reuses the caption without a request.
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.PROMPT_ENHANCE)

    @classmethod
    def execute(cls, idea: str, base_url: str, model: str, api_key_env: str, temperature: float, seed: int,
                max_tokens: int, timeout: int, retry_without_image: bool = False, image=None) -> io.NodeOutput:
        settings = EnhanceSettings(base_url, model, api_key_env, temperature, seed, max_tokens, timeout,
                                   retry_without_image)
        image_url = image_data_url(image) if image is not None else None
        try:
            # Cancel in ComfyUI stops the request (polled while waiting); hosts and key come from the environment
            result = enhance_prompt(idea, image_url, settings, should_stop=mm.processing_interrupted)
        except Cancelled:
            mm.throw_exception_if_processing_interrupted()  # ComfyUI's own "interrupted", not an error
            raise
        shown = "".join(f"warning: {w}\n\n" for w in result.warnings) + result.caption
        return io.NodeOutput(result.caption, ui=ui.PreviewText(shown))


class MovaPromptBuilder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.PROMPT_BUILDER)

    @classmethod
    def execute(cls, scene: str, action: str, camera: str, **fields) -> io.NodeOutput:
        rows = [(fields[f"speaker_{i}"], fields[f"language_{i}"], fields[f"words_{i}"])
                for i in range(1, spec.SPEECH_LINES + 1)]
        return io.NodeOutput(build_caption(scene, action, camera, speech_lines(rows), fields["music"],
                                           fields["effects"], fields["ambience"]))
