"""ComfyUI V3 schemas built from the node specs (each wing's ``spec.py``; this module needs ComfyUI)."""

from __future__ import annotations

import logging

import folder_paths
from comfy_api.latest import io

from . import spec_types
from .loaders.model_checks import filter_choices
from .loaders.model_files import gguf_files, list_choices
from .lora.patches import lora_choices

CUSTOM_TYPES = {
    name: io.Custom(name)
    for name in (spec_types.VIDEO_EXPERT, spec_types.AUDIO_TOWER, spec_types.AUDIO_VAE, spec_types.MOVA_CONDITIONING, spec_types.AUDIO_LATENT,
                 spec_types.SAMPLER_OPTIONS, spec_types.LORA, spec_types.DATASET, spec_types.EXTENSION)
}
STOCK_TYPES = {
    "CONDITIONING": io.Conditioning, "VAE": io.Vae, "IMAGE": io.Image, "LATENT": io.Latent,
    "AUDIO": io.Audio, "FLOAT": io.Float, "STRING": io.String, "CLIP": io.Clip, "GUIDER": io.Guider,
    "SIGMAS": io.Sigmas,
}


def _type(name: str):
    return CUSTOM_TYPES.get(name) or STOCK_TYPES[name]


def model_choices(folder: str, kinds: tuple[str, ...] | None = None, loader: str = "") -> list[str]:
    """Files and component folders of one of ComfyUI's model folders (any LoRA file for loras); with ``kinds``
    only those that hold one of these MOVA components (or whose contents cannot be told)."""
    if folder == "loras":
        return lora_choices(folder_paths.get_filename_list(folder))
    roots = folder_paths.get_folder_paths(folder)
    choices = list_choices([*folder_paths.get_filename_list(folder), *gguf_files(roots)], roots)
    return filter_choices(choices, roots, kinds, loader) if kinds else choices


def _widget(w: spec_types.Widget, node: str = ""):
    if w.kind == "INT":
        return io.Int.Input(w.name, default=w.default, min=w.min, max=w.max, step=w.step,
                            control_after_generate=w.control_after_generate or None, tooltip=w.tooltip)
    if w.kind == "FLOAT":
        return io.Float.Input(w.name, default=w.default, min=w.min, max=w.max, step=w.step, round=w.round,
                              tooltip=w.tooltip)
    if w.kind == "BOOLEAN":
        return io.Boolean.Input(w.name, default=w.default, tooltip=w.tooltip)
    if w.kind == "COMBO":
        options = list(w.options) if w.options is not None else model_choices(w.model_folder, w.model_kinds, node)
        return io.Combo.Input(w.name, options=options, default=w.default, tooltip=w.tooltip)
    return io.String.Input(w.name, default=w.default, multiline=w.multiline, tooltip=w.tooltip)


def _input(item, node: str = ""):
    if isinstance(item, spec_types.Widget):
        return _widget(item, node)
    if item.type in spec_types.WIDGET_KINDS:  # a number or text that only comes through a connection
        return _type(item.type).Input(item.name, optional=item.optional, tooltip=item.tooltip, force_input=True)
    return _type(item.type).Input(item.name, optional=item.optional, tooltip=item.tooltip)


def schema(node: spec_types.NodeSpec, hidden: list | None = None) -> io.Schema:
    """The io.Schema of a MOVA node, in the MOVA category."""
    return io.Schema(
        node_id=node.node_id,
        display_name=node.display_name,
        category=spec_types.CATEGORY,
        description=node.description,
        inputs=[_input(i, node.display_name) for i in node.inputs],
        # output ids must differ from input ids (MovaConditioning has an fps widget and an fps output)
        outputs=[_type(o.type).Output(f"out_{o.name}", display_name=o.name, tooltip=o.tooltip) for o in node.outputs],
        hidden=hidden,
        is_output_node=node.output_node,
    )


def show_text(node_id: str | None, text: str) -> None:
    """Show ``text`` on the node in the browser (ComfyUI's progress text, as Get Image Size does)."""
    if not node_id:
        return
    try:
        from server import PromptServer
        PromptServer.instance.send_progress_text(text, node_id)
    except Exception as exc:  # no server (scripts, tests): the log has the text anyway
        logging.getLogger(__name__).debug("could not show text on node %s: %s", node_id, exc)
