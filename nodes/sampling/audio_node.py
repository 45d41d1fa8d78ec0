"""MOVA Audio Decode node: audio latent -> ComfyUI AUDIO."""

from __future__ import annotations

import comfy.model_management as mm
from comfy_api.latest import io

from .. import spec
from .audio_decode import decode_to_audio
from ..comfy_io import schema
from ..handles import AudioLatent, LoadedPart
from ..input_values import checked_inputs


class MovaAudioDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.AUDIO_DECODE)

    @classmethod
    @checked_inputs(spec.AUDIO_DECODE)
    def execute(cls, audio_vae: LoadedPart, audio_latent: AudioLatent, chunk_size: int) -> io.NodeOutput:
        mm.load_models_gpu([audio_vae.patcher])
        audio = decode_to_audio(audio_vae, audio_latent, chunk_size, device=audio_vae.patcher.load_device)
        return io.NodeOutput(audio)
