"""UI -> API conversion against node definitions of newer ComfyUI (v0.33): DynamicCombo widgets (Save Video's
``format`` with its nested ``codec``), Autogrow sockets, values stored by name, and workflows whose stored values do
not fit the node refused with the node and the widget named. The shipped workflows against real servers and the
real frontend: tests/comfyui/test_comfyui_*.py and tests/comfyui/test_browser.py."""

import copy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from workflow_api import WorkflowError, missing_models, ui_to_api  # noqa: E402


def _option(key: str, required: dict | None = None, optional: dict | None = None) -> dict:
    inputs = {"required": required or {}}
    if optional:
        inputs["optional"] = optional
    return {"key": key, "inputs": inputs}


def _codec(hidden: bool = False) -> list:
    """A codec DynamicCombo as ComfyUI v0.33 declares it: auto, or h264 with a nested encoding choice."""
    encoding = ["COMFY_DYNAMICCOMBO_V3", {"options": [
        _option("auto"),
        _option("re-encode", {"crf": ["FLOAT", {"default": 23.0, "min": 0.0, "max": 51.0}],
                              "color_space": ["COMBO", {"default": "auto", "options": ["auto", "sRGB"]}]}),
    ]}]
    options = {"options": [_option("auto"), _option("h264", optional={"encoding": encoding})]}
    if hidden:
        options["hidden"] = True
    return ["COMFY_DYNAMICCOMBO_V3", options]


# /object_info of v0.33's Save Video, Create Video and an Autogrow node, trimmed to what the conversion reads
OBJECT_INFO = {
    "SaveVideo": {
        "input": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
                               "format": ["COMFY_DYNAMICCOMBO_V3", {"options": [
                                   _option("auto", {"codec": _codec()}), _option("mp4", {"codec": _codec()})]}]},
                  "optional": {"codec": _codec(hidden=True)}},
        "input_order": {"required": ["video", "filename_prefix", "format"], "optional": ["codec"]},
        "display_name": "Save Video"},
    "CreateVideo": {
        "input": {"required": {"images": ["IMAGE", {}], "fps": ["FLOAT", {"default": 30.0}]},
                  "optional": {"audio": ["AUDIO", {}], "bit_depth": ["INT", {"default": 8, "min": 8, "max": 10}]}},
        "input_order": {"required": ["images", "fps"], "optional": ["audio", "bit_depth"]},
        "display_name": "Create Video"},
    "LoadImage": {
        "input": {"required": {"image": ["COMBO", {"options": ["a.png"], "image_upload": True}]}},
        "input_order": {"required": ["image"]}, "display_name": "Load Image"},
    "BatchImagesNode": {
        "input": {"required": {"images": ["COMFY_AUTOGROW_V3", {"template": {
            "input": {"required": {"image": ["IMAGE", {}]}}, "prefix": "image", "min": 1, "max": 50}}]}},
        "input_order": {"required": ["images"]}, "display_name": "Batch Images"},
}


def _workflow(save_values, create_values=(24,), **save_extra) -> dict:
    """Load Image -> Create Video -> Save Video, as the frontend saves it (links: id, from, slot, to, slot, type)."""
    save = {"id": 3, "type": "SaveVideo", "inputs": [{"name": "video", "type": "VIDEO", "link": 2}],
            "widgets_values": save_values} | save_extra
    return {"nodes": [
        {"id": 1, "type": "LoadImage", "inputs": [], "widgets_values": ["a.png", "image"]},
        {"id": 2, "type": "CreateVideo", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
         "widgets_values": list(create_values)},
        save,
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "VIDEO"]]}


def test_save_video_saved_before_format_became_a_dynamic_combo():
    """A workflow saved with v0.3.64's Save Video (filename_prefix, format, codec) reads as frontend 1.49 reads it:
    the third value goes to the nested format.codec, the hidden codec and Create Video's new bit_depth get their
    defaults."""
    prompt = ui_to_api(_workflow(["video/MOVA", "auto", "auto"]), OBJECT_INFO)
    assert prompt["3"]["inputs"] == {"filename_prefix": "video/MOVA", "format": "auto", "format.codec": "auto",
                                     "codec": "auto", "video": ["2", 0]}
    assert prompt["2"]["inputs"] == {"fps": 24, "bit_depth": 8, "images": ["1", 0]}
    assert prompt["1"]["inputs"] == {"image": "a.png"}
    assert missing_models(prompt, OBJECT_INFO) == []


def test_nested_options_follow_the_choice():
    """h264 adds encoding, re-encode adds crf and color_space: each choice lays out the widgets after it."""
    values = ["clip", "mp4", "h264", "re-encode", 18.0, "sRGB", "auto"]
    inputs = ui_to_api(_workflow(values), OBJECT_INFO)["3"]["inputs"]
    assert inputs == {"filename_prefix": "clip", "format": "mp4", "format.codec": "h264",
                      "format.codec.encoding": "re-encode", "format.codec.encoding.crf": 18.0,
                      "format.codec.encoding.color_space": "sRGB", "codec": "auto", "video": ["2", 0]}
    inputs["format.codec.encoding.color_space"] = "HDR"  # a nested combo's value is checked too
    (problem,) = missing_models({"3": {"class_type": "SaveVideo", "inputs": inputs, "_meta": {"title": "Save"}}},
                                OBJECT_INFO)
    assert "format.codec.encoding.color_space" in problem and "'HDR'" in problem


def test_values_by_name_where_the_workflow_stores_them():
    """Frontend 1.49 also stores widgets_values_named: names survive a widget inserted in the middle."""
    named = {"filename_prefix": "clip", "format": "mp4", "format.codec": "auto", "codec": "auto"}
    workflow = _workflow(["stale", "order"], widgets_values_named=named)
    assert ui_to_api(workflow, OBJECT_INFO)["3"]["inputs"] == named | {"video": ["2", 0]}
    workflow["nodes"][2]["widgets_values_named"] = named | {"quality": 5}
    with pytest.raises(WorkflowError, match=r"node 3 'Save Video' \(SaveVideo\).*'quality'.*does not have"):
        ui_to_api(workflow, OBJECT_INFO)


@pytest.mark.parametrize("values,message", [
    (["video/MOVA", "auto", "auto", "auto", "h264"], r"node 3 'Save Video'.*1 widget value\(s\) more.*'h264'"),
    (["video/MOVA", "webm", "auto"], r"node 3 'Save Video'.*widget format is 'webm', not one of 'auto', 'mp4'"),
    ({"filename_prefix": "x", "format": "auto"}, r"node 3 'Save Video'.*widgets_values is a mapping"),
    ("video/MOVA", r"node 3 'Save Video'.*widgets_values is str"),
])
def test_values_that_fit_no_widget_are_refused(values, message):
    with pytest.raises(WorkflowError, match=message):
        ui_to_api(_workflow(values), OBJECT_INFO)


def test_shifted_values_are_refused_naming_the_widget():
    """One value too many in the middle: a text lands in a number widget."""
    with pytest.raises(WorkflowError, match=r"node 2 'Create Video'.*widget fps \(FLOAT\) holds 'x'.*shifted"):
        ui_to_api(_workflow(["video/MOVA", "auto", "auto"], create_values=("x", 24)), OBJECT_INFO)
    with pytest.raises(WorkflowError, match=r"widget bit_depth \(INT\) holds 2.5"):
        ui_to_api(_workflow(["video/MOVA", "auto", "auto"], create_values=(24, 2.5)), OBJECT_INFO)


def test_trailing_nulls_are_the_frontends_own():
    """The frontend leaves null where a widget is not saved (Load Audio's player): not a value too many."""
    prompt = ui_to_api(_workflow(["video/MOVA", "auto", "auto", "auto", None]), OBJECT_INFO)
    assert prompt["3"]["inputs"]["codec"] == "auto"


def test_autogrow_sockets_and_links_into_nested_inputs():
    """Autogrow's sockets (images.image0, ...) and their links reach the API under their dotted names."""
    workflow = _workflow(["video/MOVA", "auto", "auto"])
    workflow["nodes"].append({"id": 4, "type": "BatchImagesNode", "inputs": [
        {"name": "images.image0", "type": "IMAGE", "link": 3}, {"name": "images.image1", "type": "IMAGE", "link": 4},
        {"name": "images.image2", "type": "IMAGE", "link": None}], "widgets_values": []})
    workflow["links"] += [[3, 1, 0, 4, 0, "IMAGE"], [4, 1, 0, 4, 1, "IMAGE"]]
    assert ui_to_api(workflow, OBJECT_INFO)["4"]["inputs"] == {"images.image0": ["1", 0], "images.image1": ["1", 0]}
    broken = copy.deepcopy(workflow)
    broken["links"] = broken["links"][:-1]
    with pytest.raises(WorkflowError, match=r"input images.image1 of node 4 'Batch Images' comes from a missing link"):
        ui_to_api(broken, OBJECT_INFO)


def test_api_prompt_given_for_a_ui_workflow_is_refused():
    api = {"3": {"class_type": "SaveVideo", "inputs": {}}}
    with pytest.raises(WorkflowError, match="not a UI-format ComfyUI workflow"):
        ui_to_api(api, OBJECT_INFO)


def _drop(node: dict, key: str) -> None:
    node.pop(key)


@pytest.mark.parametrize("damage, message", [
    (lambda wf: wf["nodes"].append(5), r"entry 4 of the workflow's nodes is 5, not a node"),
    (lambda wf: _drop(wf["nodes"][2], "type"), r"node 3 has no type"),
    (lambda wf: _drop(wf["nodes"][2], "id"), r"entry 3 of the workflow's nodes \('SaveVideo'\) has no id"),
    (lambda wf: wf["nodes"][1].update(id=3), r"two nodes of the workflow have the id 3"),
    (lambda wf: wf["nodes"][2]["inputs"].append("video"), r"node 3 \(SaveVideo\): its inputs are .* not a list of "
                                                          r"sockets"),
    (lambda wf: wf["nodes"][2]["inputs"][0].update(link=[2]), r"input 'video' names the link \[2\], not a link number"),
    (lambda wf: wf["links"].append(7), r"entry 3 of the workflow's links is 7, not a link \[id, from node"),
    (lambda wf: wf["links"].__setitem__(1, [2, 2]), r"entry 2 of the workflow's links is \[2, 2\]"),
    (lambda wf: wf.update(links={"2": [2, 2, 0, 3, 0, "VIDEO"]}), r"the workflow's links are \{'2'.*not a list"),
])
def test_nodes_and_links_not_shaped_as_comfyui_writes_them_are_refused(damage, message):
    """A hand-edited or damaged workflow is named where it breaks, with the fix, not a KeyError or TypeError from
    inside the conversion."""
    workflow = _workflow(["video/MOVA", "auto", "auto"])
    damage(workflow)
    with pytest.raises(WorkflowError, match=message + r".*open the workflow in ComfyUI and save it again"):
        ui_to_api(workflow, OBJECT_INFO)
