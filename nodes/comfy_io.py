"""ComfyUI V3 schemas built from ``spec`` (this module needs ComfyUI)."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from . import spec
from .model_files import list_choices

CUSTOM_TYPES = {
    name: io.Custom(name)
    for name in (spec.VIDEO_EXPERT, spec.AUDIO_TOWER, spec.AUDIO_VAE, spec.MOVA_CONDITIONING, spec.AUDIO_LATENT)
}
STOCK_TYPES = {
    "CONDITIONING": io.Conditioning, "VAE": io.Vae, "IMAGE": io.Image, "LATENT": io.Latent,
    "AUDIO": io.Audio, "FLOAT": io.Float,
}


def _type(name: str):
    return CUSTOM_TYPES.get(name) or STOCK_TYPES[name]


def model_choices(folder: str) -> list[str]:
    """Files and component folders of one of ComfyUI's model folders."""
    return list_choices(folder_paths.get_filename_list(folder), folder_paths.get_folder_paths(folder))


def _widget(w: spec.Widget):
    if w.kind == "INT":
        return io.Int.Input(w.name, default=w.default, min=w.min, max=w.max, step=w.step,
                            control_after_generate=w.control_after_generate or None, tooltip=w.tooltip)
    if w.kind == "FLOAT":
        return io.Float.Input(w.name, default=w.default, min=w.min, max=w.max, step=w.step, round=w.round,
                              tooltip=w.tooltip)
    if w.kind == "COMBO":
        options = list(w.options) if w.options is not None else model_choices(w.model_folder)
        return io.Combo.Input(w.name, options=options, default=w.default, tooltip=w.tooltip)
    return io.String.Input(w.name, default=w.default, tooltip=w.tooltip)


def _input(item):
    if isinstance(item, spec.Widget):
        return _widget(item)
    return _type(item.type).Input(item.name, optional=item.optional, tooltip=item.tooltip)


def schema(node: spec.NodeSpec) -> io.Schema:
    """The io.Schema of a MOVA node, in the MOVA category."""
    return io.Schema(
        node_id=node.node_id,
        display_name=node.display_name,
        category=spec.CATEGORY,
        description=node.description,
        inputs=[_input(i) for i in node.inputs],
        # output ids must differ from input ids (MovaConditioning has an fps widget and an fps output)
        outputs=[_type(o.type).Output(f"out_{o.name}", display_name=o.name, tooltip=o.tooltip) for o in node.outputs],
    )
