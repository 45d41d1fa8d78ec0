"""UI-format workflow -> ComfyUI API prompt, MOVA run parameters, and the missing-model check.

Plain Python (standard library only). The conversion needs the server's ``/object_info`` to know which
inputs are widgets and in which order their values are stored.
"""

from __future__ import annotations

import ast
from pathlib import Path

from workflow_widgets import (  # scripts/ is on the path wherever this module is imported from
    CONTROL, MISSING, UPLOAD, StoredValues, WidgetError, lay_out, prompt_widgets,
)
from workflow_widgets import combo_options  # noqa: F401  (part of this module's interface)
from workflow_shape import ShapeError, check_shape

SKIPPED_TYPES = {"Note", "MarkdownNote"}
TEXT_NODES = ("MovaTextEncode", "CLIPTextEncode")  # nodes whose "text" holds a prompt
MUTED, BYPASSED = 2, 4
# Stock loader inputs and the model folder they list.
STOCK_MODEL_INPUTS = {
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("FrameInterpolationModelLoader", "model_name"): "frame_interpolation",
}

# Core nodes of newer ComfyUI releases that some examples use (mova_i2va_interpolate): v0.33.0 has them, v0.3.64 and
# v0.8.0 do not. A server without one is told to update ComfyUI, not to install a pack.
NEWER_CORE_NODES = ("FrameInterpolationModelLoader", "FrameInterpolate", "ComfyMathExpression")
NEWER_CORE = "ComfyUI v0.33.0 or later"


class WorkflowError(ValueError):
    """The workflow cannot be run as asked; the message says what to change."""


def _spec_model_folders(path: Path) -> dict[tuple[str, str], str]:
    """(node id, input name) -> model folder for the widgets of one wing's spec.py that list model files, read from
    its source (``NodeSpec(node_id=..., inputs=(Widget("name", ..., model_folder="..."), ...))``): the specs import
    the pack's registries and torch, this script only the standard library."""
    found = {}
    for call in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "NodeSpec"):
            continue
        node_id = next(k.value.value for k in call.keywords if k.arg == "node_id")
        for widget in ast.walk(call):
            if isinstance(widget, ast.Call) and getattr(widget.func, "id", None) == "Widget":
                folder = next((k.value.value for k in widget.keywords if k.arg == "model_folder"), None)
                if folder:
                    found[(node_id, widget.args[0].value)] = folder
    return found


def model_folders() -> dict[tuple[str, str], str]:
    """(node type, input name) -> ComfyUI model folder, for every loader input we know."""
    folders = dict(STOCK_MODEL_INPUTS)
    for path in sorted((Path(__file__).resolve().parents[1] / "nodes").glob("*/spec.py")):
        folders.update(_spec_model_folders(path))
    return folders


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API prompt {node id: {class_type, inputs, _meta}} of a UI-format workflow, as ComfyUI's frontend makes it
    from the server's ``object_info`` (scripts/workflow_widgets.py: the widgets, DynamicCombos included)."""
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise WorkflowError("this is not a UI-format ComfyUI workflow (no list of nodes): give a workflow saved by "
                            "ComfyUI's Save / Export, not an API prompt")
    try:
        check_shape(workflow)  # nodes and links as ComfyUI writes them, before anything below reads them
    except ShapeError as exc:
        raise WorkflowError(str(exc)) from None
    links = {link[0]: link for link in workflow.get("links", [])}
    nodes = {str(node["id"]): node for node in workflow["nodes"]}  # numbers, or strings (newer frontends)
    prompt = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in SKIPPED_TYPES or node.get("mode", 0) == MUTED:
            continue
        title = node.get("title") or object_info.get(kind, {}).get("display_name") or kind
        if node.get("mode", 0) == BYPASSED:
            raise WorkflowError(f"node {node['id']} '{title}' is bypassed: enable it or delete it in the workflow")
        if kind not in object_info and kind in NEWER_CORE_NODES:
            raise WorkflowError(
                f"node type {kind} ('{title}') is a core node of newer ComfyUI releases and this server lacks it: "
                f"this workflow needs {NEWER_CORE} (update ComfyUI and restart it)"
            )
        if kind not in object_info:
            raise WorkflowError(
                f"node type {kind} ('{title}') is not installed on the server: install the pack that provides it "
                "(for Mova* nodes: this pack in ComfyUI/custom_nodes) and restart ComfyUI; check the server log "
                "for import errors."
            )
        info = object_info[kind]
        try:
            widgets = lay_out(info, StoredValues(node, f"node {node['id']} '{title}' ({kind})"))
        except WidgetError as exc:
            raise WorkflowError(str(exc)) from None
        inputs = {w.name: w.value for w in widgets if w.kind not in (CONTROL, UPLOAD) and w.value is not MISSING}
        names = {name for section in ("required", "optional") for name in info.get("input", {}).get(section, {})}
        for entry in node.get("inputs", []):
            name = entry.get("name", "")
            # a socket of the node's own inputs, or one a DynamicCombo option or an Autogrow input added (dotted)
            if entry.get("link") is None or (name not in names and name.split(".")[0] not in names):
                continue
            link = links.get(entry["link"])
            if link is None or str(link[1]) not in nodes:
                source = "a missing link" if link is None else f"a missing node {link[1]}"
                raise WorkflowError(f"input {name} of node {node['id']} '{title}' comes from {source}: reconnect it "
                                    "in ComfyUI and save the workflow")
            inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs, "_meta": {"title": title}}
    return prompt


def _single(prompt: dict, class_type: str) -> tuple[str, dict]:
    found = [(key, node) for key, node in prompt.items() if node["class_type"] == class_type]
    if len(found) != 1:
        raise WorkflowError(f"the workflow must hold exactly one {class_type} node, it holds {len(found)}")
    return found[0]


def _source(prompt: dict, node: dict, name: str) -> tuple[str, dict] | None:
    value = node["inputs"].get(name)
    if isinstance(value, list):
        return value[0], prompt[value[0]]
    return None


def set_parameters(prompt: dict, *, prompt_text: str | None = None, negative: str | None = None,
                   seed: int | None = None, width: int | None = None, height: int | None = None,
                   frames: int | None = None, steps: int | None = None, image_name: str | None = None,
                   audio_name: str | None = None, video_name: str | None = None,
                   end_image_name: str | None = None) -> dict:
    """Write the run's parameters into a MOVA API prompt (found by the graph, not by node ids). Seed and steps go
    to every MOVA Sampler (a longer video has one per clip), or to Random Noise and MOVA Scheduler (the native
    path); size, length and prompts to MOVA Conditioning."""
    _, cond = _single(prompt, "MovaConditioning")
    samplers = [node for node in prompt.values() if node["class_type"] == "MovaSampler"]
    # the native path: SamplerCustomAdvanced, its seed on Random Noise and its steps on MOVA Scheduler
    native = [node for node in prompt.values() if node["class_type"] == "SamplerCustomAdvanced"]
    if not samplers and not native:
        raise WorkflowError("the workflow must hold a MovaSampler node (or SamplerCustomAdvanced with the MOVA "
                            "Guider), it holds none")
    for name, value in (("width", width), ("height", height), ("length", frames)):
        if value is not None:
            cond["inputs"][name] = value
    targets = {"seed": [(s, "seed") for s in samplers] + [(n, "noise_seed") for n in prompt.values()
                                                          if n["class_type"] == "RandomNoise"],
               "steps": [(s, "steps") for s in samplers] + [(n, "steps") for n in prompt.values()
                                                            if n["class_type"] == "MovaScheduler"]}
    for name, value in (("seed", seed), ("steps", steps)):
        for node, key in targets[name]:
            if value is not None:
                node["inputs"][key] = value
    _set_media(prompt, cond, audio_name, video_name, end_image_name)
    for name, text in (("positive", prompt_text), ("negative", negative)):
        if text is None:
            continue
        source = _source(prompt, cond, name)
        if source is None or source[1]["class_type"] not in TEXT_NODES:
            raise WorkflowError(f"MOVA Conditioning's {name} input is not fed by a MOVA Text Encode (or CLIP Text "
                                "Encode) node")
        writer = _source(prompt, source[1], "text")
        if writer is not None and writer[1]["class_type"] == "MovaPromptEnhance":
            writer[1]["inputs"]["idea"] = text  # the language model writes the caption from it
        elif writer is not None:
            raise WorkflowError(f"the {name} prompt's text comes from a {writer[1]['class_type']} node: edit it there")
        else:
            source[1]["inputs"]["text"] = text
    image_source = _source(prompt, cond, "start_image")
    if image_name is not None:
        if image_source is None or image_source[1]["class_type"] != "LoadImage":
            raise WorkflowError("this workflow has no start image (text only): use mova_i2va.json with --image")
        image_source[1]["inputs"]["image"] = image_name
    elif image_source is not None and image_source[1]["class_type"] == "LoadImage":
        raise WorkflowError("this workflow starts from an image: give --image, or use mova_t2va.json for text only")
    return prompt


# MOVA Conditioning's media inputs: (input, loader class, the loader's file widget, message when the workflow has
# no such loader, message when the workflow needs the file)
MEDIA_INPUTS = (
    ("end_image", "LoadImage", "image", "this workflow takes no last frame: use mova_flf2va.json with --end-image",
     "this workflow ends on a given last frame: give --end-image"),
    ("audio", "LoadAudio", "audio", "this workflow takes no sound: use mova_a2v.json with --audio",
     "this workflow follows a sound: give --audio"),
    ("video", "LoadVideo", "file", "this workflow takes no video: use mova_v2a.json with --video",
     "this workflow writes a sound for a video: give --video"),
)


def _media_loader(prompt: dict, cond: dict, name: str, loader_class: str) -> dict | None:
    """The loader node feeding MOVA Conditioning's ``name`` input (a video through Get Video Components)."""
    source = _source(prompt, cond, name)
    if source is not None and source[1]["class_type"] == "GetVideoComponents":
        source = _source(prompt, source[1], "video")
    return source[1] if source is not None and source[1]["class_type"] == loader_class else None


def _set_media(prompt: dict, cond: dict, audio_name: str | None, video_name: str | None,
               end_image_name: str | None) -> None:
    """The last frame (Load Image), the sound (Load Audio) and the video (Load Video -> Get Video Components)
    MOVA Conditioning takes."""
    given = {"end_image": end_image_name, "audio": audio_name, "video": video_name}
    for name, loader_class, widget, not_taken, needed in MEDIA_INPUTS:
        loader = _media_loader(prompt, cond, name, loader_class)
        if given[name] is not None:
            if loader is None:
                raise WorkflowError(not_taken)
            loader["inputs"][widget] = given[name]
        elif loader is not None:
            raise WorkflowError(needed)


def missing_models(prompt: dict, object_info: dict, skip: set[tuple[str, str]] = frozenset()) -> list[str]:
    """One message per combo value the server does not offer (model files first of all)."""
    folders = model_folders()
    problems = []
    for key, node in prompt.items():
        for widget in prompt_widgets(object_info.get(node["class_type"], {}), node["inputs"]):
            name, value, choices = widget.name, widget.value, widget.choices
            if choices is None or value is MISSING or isinstance(value, list) or value in choices or \
                    (key, name) in skip:
                continue
            title = node["_meta"]["title"]
            folder = folders.get((node["class_type"], name))
            if folder:
                problems.append(f"model '{value}' for '{title}' ({name}) is not in ComfyUI/models/{folder}: "
                                "download it there (see the workflow's note or the README), then restart or "
                                "refresh ComfyUI")
            else:
                problems.append(f"'{title}' ({name}): '{value}' is not one of the server's choices")
    return problems


def video_outputs(history_entry: dict, prompt: dict) -> list[dict]:
    """The files SaveVideo nodes wrote ({filename, subfolder, type}) in a /history entry."""
    found = []
    for key, output in history_entry.get("outputs", {}).items():
        if prompt.get(key, {}).get("class_type") == "SaveVideo":
            found.extend(output.get("images", []))
    return found
