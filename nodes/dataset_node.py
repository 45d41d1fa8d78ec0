"""MOVA Dataset node: a folder of captioned clips -> encoded training latents (cached on disk)."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from . import spec
from .clip_folder import ClipFolderError, resolve_clip_folder
from .comfy_io import schema, show_text
from .condition import text_states
from .dataset import DatasetRequest, Encoders, build_dataset, module_fingerprint, output_fingerprint
from .handles import LoadedPart

log = logging.getLogger(__name__)
PROBE_TEXT = "MOVA dataset cache probe"


def clip_folder(folder: str) -> Path:
    """The clip folder: inside ComfyUI's input directory or a folder the user listed in MOVA_DATASET_FOLDERS."""
    return resolve_clip_folder(folder, folder_paths.get_input_directory())


def folder_state(folder: Path) -> str:
    """Names, sizes and times of the folder's files: a new, changed or removed clip or caption reruns the node."""
    if not folder.is_dir():
        return f"missing:{folder}"
    return ";".join(f"{p.name}:{s.st_size}:{s.st_mtime_ns}" for p in sorted(folder.iterdir()) if p.is_file()
                    for s in (p.stat(),))


def comfy_encoders(vae, audio_vae: LoadedPart, clip) -> Encoders:
    """The Wan VAE, MOVA's audio VAE and the text encoder as the dataset builder's functions."""
    dac = audio_vae.model

    def encode_audio(wave: torch.Tensor) -> torch.Tensor:
        mm.load_models_gpu([audio_vae.patcher])
        with torch.no_grad():
            return dac.encode(wave.to(audio_vae.patcher.load_device, audio_vae.compute_dtype)).float().cpu()

    def encode_text(caption: str) -> torch.Tensor:  # what CLIP Text Encode does
        return text_states(clip.encode_from_tokens_scheduled(clip.tokenize(caption)), "clip")

    def fingerprint(module, probe) -> str:
        return module_fingerprint(module) if isinstance(module, torch.nn.Module) else output_fingerprint(probe())

    prints = [
        fingerprint(getattr(vae, "first_stage_model", None), lambda: vae.encode(torch.full((1, 64, 64, 3), 0.5))),
        module_fingerprint(dac),
        fingerprint(getattr(clip, "cond_stage_model", None), lambda: encode_text(PROBE_TEXT)),
    ]
    return Encoders(video=lambda frames: vae.encode(frames[:, :, :, :3]), audio=encode_audio, text=encode_text,
                    sample_rate=dac.config.sample_rate, hop_length=dac.config.hop_length, fingerprint="|".join(prints))


class MovaDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.DATASET_NODE, hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, folder: str | None = None) -> bool | str:
        """At queue time: the folder is one MOVA Dataset may read (nothing is read yet)."""
        if folder is not None:
            try:
                clip_folder(folder)
            except ClipFolderError as err:
                return str(err)
        return True

    @classmethod
    def fingerprint_inputs(cls, folder: str = "", **kwargs) -> str:
        try:
            return folder_state(clip_folder(folder))
        except ClipFolderError as err:  # execute raises it
            return f"refused:{err}"

    @classmethod
    def execute(cls, vae, audio_vae: LoadedPart, clip, folder: str, width: int, height: int, length: int,
                fps: float, fps_mode: str) -> io.NodeOutput:
        if clip is None:
            raise ValueError("clip: connect Load CLIP (umt5_xxl, type wan) to encode the captions")
        channels = getattr(vae, "latent_channels", 16)
        if channels != 16:
            raise ValueError(f"vae makes {channels}-channel latents; MOVA needs the Wan 2.1 VAE (16 channels): load "
                             "wan_2.1_vae.safetensors with Load VAE.")
        request = DatasetRequest(clip_folder(folder), width, height, length, float(fps), fps_mode)
        cache_dir = Path(folder_paths.get_output_directory()) / "mova_datasets"
        bar = comfy.utils.ProgressBar(1)

        def progress(done: int, total: int) -> None:
            bar.update_absolute(done, total)
            mm.throw_exception_if_processing_interrupted()

        dataset, path, lines = build_dataset(request, comfy_encoders(vae, audio_vae, clip), cache_dir, progress)
        text = "\n".join(lines)
        log.info("MOVA Dataset %s: %s", request.folder, text)
        show_text(cls.hidden.unique_id, text)
        return io.NodeOutput(dataset, ui=ui.PreviewText(text))
