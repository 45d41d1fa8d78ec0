"""The headless runner without a server: UI -> API conversion of the shipped workflows, parameters, the
missing-model check, and a clear refusal when no server listens. (The real server run is in
tests/comfyui/test_comfyui_*.py.)"""

import json
import socket
import sys
from pathlib import Path

import pytest

from comfyui_mova.nodes.catalog import ALL_NODES
from comfyui_mova.nodes.spec_types import WIDGET_KINDS, Widget

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import run_workflow  # noqa: E402
from comfy_client import ComfyClient, ServerError  # noqa: E402
from workflow_api import (  # noqa: E402
    STOCK_MODEL_INPUTS, WorkflowError, combo_options, missing_models, model_folders, set_parameters, ui_to_api,
    video_outputs,
)

UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"


def test_model_folders_read_from_the_specs_are_theirs():
    """The runner reads the loaders' model folders from the wings' spec.py sources (standard library only): the
    same as the specs the pack builds its nodes from, loaders and LoRA Loader included."""
    from_specs = {(node.node_id, w.name): w.model_folder for node in ALL_NODES for w in node.widgets if w.model_folder}
    assert model_folders() == STOCK_MODEL_INPUTS | from_specs
    assert {node for node, _ in from_specs} == {"MovaVideoExpertLoader", "MovaAudioTowerLoader", "MovaAudioVAELoader",
                                                "MovaLoraLoader"}


def _entry(inputs: dict, optional: dict | None = None, display=None):
    return {"input": {"required": inputs, "optional": optional or {}},
            "input_order": {"required": list(inputs), "optional": list(optional or {})},
            "display_name": display}


def _ours(node, files):
    """/object_info of one of our nodes, in the form ComfyUI gives for V3 nodes (combos as COMBO + options)."""
    required, optional = {}, {}
    for item in node.inputs:
        target = optional if getattr(item, "optional", False) else required
        if isinstance(item, Widget):
            options = {"tooltip": item.tooltip, "default": item.default}
            if item.control_after_generate:
                options["control_after_generate"] = True
            if item.kind == "COMBO":
                options["options"] = list(item.options) if item.options else files[item.model_folder]
            target[item.name] = ["COMBO" if item.kind == "COMBO" else item.kind, options]
        elif item.type in WIDGET_KINDS:  # a connection-only number: ComfyUI marks it forceInput
            target[item.name] = [item.type, {"tooltip": item.tooltip, "forceInput": True}]
        else:
            target[item.name] = [item.type, {"tooltip": item.tooltip}]
    return _entry(required, optional, node.display_name)


@pytest.fixture()
def object_info():
    """What a ComfyUI v0.3.64 server with this pack and the MOVA-360p files answers (trimmed to our graph)."""
    files = {"diffusion_models": ["MOVA-360p/video_dit", "MOVA-360p/video_dit_2", "MOVA-360p/audio_dit",
                                  "MOVA-360p/dual_tower_bridge"],
             "vae": ["MOVA-360p/audio_vae", "wan_2.1_vae.safetensors"],
             "loras": ["my_mova_lora/lora_weights.pt"]}
    info = {node.node_id: _ours(node, files) for node in ALL_NODES}
    info |= {
        "CLIPLoader": _entry({"clip_name": [[UMT5]], "type": [["stable_diffusion", "wan"]],
                              "device": [["default", "cpu"], {"advanced": True}]}),
        "CLIPTextEncode": _entry({"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}),
        "VAELoader": _entry({"vae_name": [files["vae"]]}),
        "LoadImage": _entry({"image": [["example.png", "example_end.png"], {"image_upload": True}]}),
        "VAEDecode": _entry({"samples": ["LATENT"], "vae": ["VAE"]}),
        "CreateVideo": _entry({"images": ["IMAGE"], "fps": ["FLOAT", {"default": 30.0}]}, {"audio": ["AUDIO"]}),
        "SaveVideo": _entry({"video": ["VIDEO"], "filename_prefix": ["STRING"],
                             "format": ["COMBO", {"options": ["auto", "mp4"]}],
                             "codec": ["COMBO", {"options": ["auto", "h264"]}]}),
        "PreviewAudio": _entry({"audio": ["AUDIO"]}),
        "LoadAudio": _entry({"audio": [["example_speech.wav"], {"audio_upload": True}]}),
        "LoadVideo": _entry({"file": ["COMBO", {"options": ["example_video.mp4"], "video_upload": True}]}),
        "GetVideoComponents": _entry({"video": ["VIDEO"]}),
        "UpscaleModelLoader": _entry({"model_name": ["COMBO", {"options": ["RealESRGAN_x2plus.pth"]}]}),
        "ImageUpscaleWithModel": _entry({"upscale_model": ["UPSCALE_MODEL"], "image": ["IMAGE"]}),
        "CheckpointLoaderSimple": _entry({"ckpt_name": [["sd_xl_base_1.0.safetensors"]]}),
        "EmptyLatentImage": _entry({"width": ["INT", {"default": 512}], "height": ["INT", {"default": 512}],
                                    "batch_size": ["INT", {"default": 1}]}),
        "KSampler": _entry({"model": ["MODEL"], "seed": ["INT", {"control_after_generate": True}],
                            "steps": ["INT", {"default": 20}], "cfg": ["FLOAT", {"default": 8.0}],
                            "sampler_name": [["euler", "dpmpp_2m"]], "scheduler": [["normal", "karras"]],
                            "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "latent_image": ["LATENT"],
                            "denoise": ["FLOAT", {"default": 1.0}]}),
    }
    return info


def _workflow(name):
    return json.loads((ROOT / "example_workflows" / name).read_text(encoding="utf-8"))


def _node(prompt, class_type):
    (node,) = [n for n in prompt.values() if n["class_type"] == class_type]
    return node


def test_i2va_converts_to_api(object_info):
    prompt = ui_to_api(_workflow("mova_i2va.json"), object_info)
    assert "Note" not in {n["class_type"] for n in prompt.values()}
    cond = _node(prompt, "MovaConditioning")["inputs"]
    assert (cond["width"], cond["height"], cond["length"], cond["fps"]) == (640, 352, 193, 24)
    assert all(isinstance(cond[k], list) for k in ("positive", "negative", "vae", "audio_vae", "start_image"))
    sampler = _node(prompt, "MovaSampler")["inputs"]
    # the seed's control_after_generate value ("fixed") is skipped, not taken for steps
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["shift"], sampler["boundary_ratio"]) == \
        (42, 50, 5.0, 5.0, 0.9)
    assert _node(prompt, "LoadImage")["inputs"] == {"image": "example.png"}  # the upload button's value dropped
    create = _node(prompt, "CreateVideo")["inputs"]
    assert isinstance(create["fps"], list) and prompt[create["fps"][0]]["class_type"] == "MovaConditioning"
    assert _node(prompt, "CLIPLoader")["inputs"] == {"clip_name": UMT5, "type": "wan", "device": "default"}
    assert _node(prompt, "SaveVideo")["inputs"]["format"] == "auto"
    assert missing_models(prompt, object_info) == []


def test_set_parameters_by_graph(object_info):
    prompt = ui_to_api(_workflow("mova_i2va.json"), object_info)
    set_parameters(prompt, prompt_text="hello", negative="blurry", seed=9, width=320, height=176, frames=49,
                   steps=25, image_name="face.png")
    cond = _node(prompt, "MovaConditioning")["inputs"]
    assert (cond["width"], cond["height"], cond["length"]) == (320, 176, 49)
    assert (_node(prompt, "MovaSampler")["inputs"]["seed"], _node(prompt, "MovaSampler")["inputs"]["steps"]) == (9, 25)
    assert prompt[cond["positive"][0]]["inputs"]["text"] == "hello"
    assert prompt[cond["negative"][0]]["inputs"]["text"] == "blurry"
    assert prompt[cond["start_image"][0]]["inputs"]["image"] == "face.png"


def test_image_and_workflow_must_agree(object_info):
    t2va = ui_to_api(_workflow("mova_t2va.json"), object_info)
    with pytest.raises(WorkflowError, match="no start image.*mova_i2va.json"):
        set_parameters(t2va, image_name="face.png")
    i2va = ui_to_api(_workflow("mova_i2va.json"), object_info)
    with pytest.raises(WorkflowError, match="give --image.*mova_t2va.json"):
        set_parameters(i2va, prompt_text="x")


def test_missing_model_files_are_named(object_info):
    object_info["CLIPLoader"]["input"]["required"]["clip_name"] = [[]]
    object_info["MovaVideoExpertLoader"]["input"]["required"]["model_name"][1]["options"] = ["MOVA-360p/video_dit"]
    prompt = ui_to_api(_workflow("mova_t2va.json"), object_info)
    problems = missing_models(prompt, object_info)
    assert len(problems) == 2
    assert any(UMT5 in p and "ComfyUI/models/text_encoders" in p for p in problems)
    assert any("MOVA-360p/video_dit_2" in p and "ComfyUI/models/diffusion_models" in p for p in problems)


def test_lora_and_dual_cfg_workflows_convert(object_info):
    lora = ui_to_api(_workflow("mova_i2va_lora.json"), object_info)
    loader = _node(lora, "MovaLoraLoader")["inputs"]
    assert loader["lora_name"] == "my_mova_lora/lora_weights.pt" and loader["strength_bridge"] == 1.0
    sampler = _node(lora, "MovaSampler")["inputs"]
    assert all(lora[sampler[k][0]]["class_type"] == "MovaLoraLoader"
               for k in ("high_noise_expert", "low_noise_expert", "audio_tower"))
    assert missing_models(lora, object_info) == []
    object_info["MovaLoraLoader"]["input"]["required"]["lora_name"][1]["options"] = []
    (problem,) = missing_models(lora, object_info)
    assert "my_mova_lora/lora_weights.pt" in problem and "ComfyUI/models/loras" in problem
    dual = ui_to_api(_workflow("mova_i2va_dual_cfg.json"), object_info)
    options = _node(dual, "MovaSamplerOptions")["inputs"]
    # saved before given_modality was appended: it gets its default, as in the frontend
    assert options == {"bridge_cfg": 3.5, "audio_cfg": 0.0, "audio_shift": 0.0, "cfg_cutoff": 1.0,
                       "cache_threshold": 0.0, "attention": "auto", "compile": "off", "fp8_compute": "auto",
                       "given_modality": "renoised"}
    assert dual[_node(dual, "MovaSampler")["inputs"]["options"][0]]["class_type"] == "MovaSamplerOptions"


def test_enhanced_workflow_converts_and_takes_the_idea(object_info):
    prompt = ui_to_api(_workflow("mova_i2va_enhanced.json"), object_info)
    enhancer = _node(prompt, "MovaPromptEnhance")["inputs"]
    assert enhancer["base_url"] == "http://localhost:11434/v1" and enhancer["retry_without_image"] is False
    assert prompt[enhancer["image"][0]]["class_type"] == "LoadImage"
    positive = prompt[_node(prompt, "MovaConditioning")["inputs"]["positive"][0]]
    assert positive["inputs"]["text"][0] in prompt  # linked: the caption, not the empty widget value
    assert prompt[positive["inputs"]["text"][0]]["class_type"] == "MovaPromptEnhance"
    assert missing_models(prompt, object_info) == []
    set_parameters(prompt, prompt_text="a cat jumps", image_name="cat.png")
    assert enhancer["idea"] == "a cat jumps" and isinstance(positive["inputs"]["text"], list)


def test_unknown_node_type_says_install(object_info):
    del object_info["MovaSampler"]
    with pytest.raises(WorkflowError, match="MovaSampler.*not installed on the server"):
        ui_to_api(_workflow("mova_t2va.json"), object_info)


def test_bypassed_node_refused(object_info):
    workflow = _workflow("mova_t2va.json")
    next(n for n in workflow["nodes"] if n["type"] == "PreviewAudio")["mode"] = 4
    with pytest.raises(WorkflowError, match="bypassed"):
        ui_to_api(workflow, object_info)


def test_combo_formats():
    assert combo_options(["a", "b"], {}) == ["a", "b"]
    assert combo_options(["a", "b"]) == ["a", "b"]  # v0.3.64's object_info: [choices] alone
    assert combo_options("COMBO", {"options": ["c"]}) == ["c"]
    assert combo_options("INT", {"min": 0}) is None


def test_video_outputs_from_history():
    prompt = {"9": {"class_type": "SaveVideo"}, "3": {"class_type": "PreviewAudio"}}
    history = {"outputs": {"9": {"images": [{"filename": "a.mp4", "subfolder": "video", "type": "output"}],
                                 "animated": [True]},
                           "3": {"audio": [{"filename": "b.flac"}]}}}
    assert video_outputs(history, prompt) == [{"filename": "a.mp4", "subfolder": "video", "type": "output"}]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_a_clear_error():
    with pytest.raises(ServerError, match="cannot reach ComfyUI at http://127.0.0.1:.*start it first"):
        ComfyClient(f"127.0.0.1:{_closed_port()}", timeout=5).object_info()


def test_cli_server_down(tmp_path, capsys):
    code = run_workflow.main(["--server", f"http://127.0.0.1:{_closed_port()}", "--prompt", "x",
                              "--output", str(tmp_path / "out.mp4")])
    assert code == 1
    assert "cannot reach ComfyUI" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_set_parameters_with_stock_text_encode(object_info):
    """A graph with stock CLIP Text Encode nodes (a user's own) still takes the prompt."""
    workflow = _workflow("mova_t2va.json")
    for node in workflow["nodes"]:
        if node["type"] == "MovaTextEncode":
            node["type"] = "CLIPTextEncode"
    prompt = ui_to_api(workflow, object_info)
    set_parameters(prompt, prompt_text="hello (softly)", negative="blurry")
    cond = _node(prompt, "MovaConditioning")["inputs"]
    assert prompt[cond["positive"][0]]["class_type"] == "CLIPTextEncode"
    assert prompt[cond["positive"][0]]["inputs"]["text"] == "hello (softly)"


def test_new_mode_workflows_convert_and_take_their_media(object_info):
    for name in ("mova_a2v.json", "mova_v2a.json", "mova_flf2va.json", "mova_extend.json"):
        assert missing_models(ui_to_api(_workflow(name), object_info), object_info) == [], name
    a2v = ui_to_api(_workflow("mova_a2v.json"), object_info)
    set_parameters(a2v, image_name="face.png", audio_name="speech.wav", frames=49)
    cond = _node(a2v, "MovaConditioning")["inputs"]
    assert a2v[cond["audio"][0]]["inputs"] == {"audio": "speech.wav"} and cond["length"] == 49
    with pytest.raises(WorkflowError, match="follows a sound: give --audio"):
        set_parameters(ui_to_api(_workflow("mova_a2v.json"), object_info), image_name="face.png")
    v2a = ui_to_api(_workflow("mova_v2a.json"), object_info)
    set_parameters(v2a, video_name="clip.mp4")
    cond = _node(v2a, "MovaConditioning")["inputs"]
    components = v2a[cond["video"][0]]
    assert components["class_type"] == "GetVideoComponents" and cond["fps"] == cond["video_fps"] == [cond["video"][0], 2]
    assert v2a[components["inputs"]["video"][0]]["inputs"] == {"file": "clip.mp4"}
    with pytest.raises(WorkflowError, match="takes no video: use mova_v2a.json"):
        set_parameters(ui_to_api(_workflow("mova_i2va.json"), object_info), image_name="x.png", video_name="c.mp4")
    flf = ui_to_api(_workflow("mova_flf2va.json"), object_info)
    set_parameters(flf, image_name="first.png", end_image_name="last.png")
    cond = _node(flf, "MovaConditioning")["inputs"]
    assert flf[cond["start_image"][0]]["inputs"] == {"image": "first.png"}
    assert flf[cond["end_image"][0]]["inputs"] == {"image": "last.png"}
    with pytest.raises(WorkflowError, match="ends on a given last frame: give --end-image"):
        set_parameters(ui_to_api(_workflow("mova_flf2va.json"), object_info), image_name="first.png")


def test_extend_workflow_sets_every_sampler(object_info):
    prompt = ui_to_api(_workflow("mova_extend.json"), object_info)
    set_parameters(prompt, seed=5, steps=10, frames=49, image_name="face.png")
    samplers = [n["inputs"] for n in prompt.values() if n["class_type"] == "MovaSampler"]
    assert len(samplers) == 2 and all((s["seed"], s["steps"]) == (5, 10) for s in samplers)
    extend = _node(prompt, "MovaExtend")["inputs"]
    assert (extend["length"], extend["overlap"], extend["crossfade"]) == (209, 17, 0.1)
    assert prompt[extend["fps"][0]]["class_type"] == "MovaConditioning"


@pytest.mark.parametrize("change,message", [
    (lambda values: values.append(7), r"node \d+ 'MOVA Sampler' \(MovaSampler\): 1 widget value\(s\) more .*seed, "
                                      r"steps, cfg, shift, boundary_ratio\): 7"),
    (lambda values: values.insert(2, 7), r"'MOVA Sampler'.*1 widget value\(s\) more .*: 0.9"),
    (lambda values: values.insert(0, "x"), r"'MOVA Sampler'.*widget seed \(INT\) holds 'x'"),
])
def test_stored_values_that_do_not_fit_name_node_and_widget(object_info, change, message):
    """A value too many (at the end or in the middle) or a shifted list: refused before anything runs."""
    workflow = _workflow("mova_i2va.json")
    change(next(n for n in workflow["nodes"] if n["type"] == "MovaSampler")["widgets_values"])
    with pytest.raises(WorkflowError, match=message):
        ui_to_api(workflow, object_info)


def test_widget_values_as_a_mapping_refused(object_info):
    workflow = _workflow("mova_i2va.json")
    node = next(n for n in workflow["nodes"] if n["type"] == "MovaConditioning")
    node["widgets_values"] = {"width": 640, "height": 352, "length": 193, "fps": 24}
    with pytest.raises(WorkflowError, match=r"'MOVA Conditioning'.*widgets_values is a mapping \('width', 'height'"):
        ui_to_api(workflow, object_info)


def test_chaining_workflows_convert_and_name_their_stock_model_files(object_info):
    """mova_i2va_upscale and mova_t2va_image_model convert; a missing upscaler or image checkpoint is named with its
    folder before anything is queued, as the MOVA files are."""
    upscale = ui_to_api(_workflow("mova_i2va_upscale.json"), object_info)
    set_parameters(upscale, image_name="example.png", seed=5)
    assert missing_models(upscale, object_info) == []
    assert _node(upscale, "UpscaleModelLoader")["inputs"] == {"model_name": "RealESRGAN_x2plus.pth"}
    create = _node(upscale, "CreateVideo")["inputs"]
    assert upscale[create["images"][0]]["class_type"] == "ImageUpscaleWithModel"
    image_model = ui_to_api(_workflow("mova_t2va_image_model.json"), object_info)
    set_parameters(image_model, prompt_text="a woman in the rain says \"hello\"", seed=6)  # no --image: fine
    ksampler = _node(image_model, "KSampler")["inputs"]
    assert (ksampler["seed"], ksampler["steps"], ksampler["sampler_name"]) == (7, 30, "dpmpp_2m")  # not MOVA's seed
    assert _node(image_model, "EmptyLatentImage")["inputs"] == {"width": 1280, "height": 720, "batch_size": 1}
    with pytest.raises(WorkflowError, match="starts from an image|no start image"):
        set_parameters(ui_to_api(_workflow("mova_t2va_image_model.json"), object_info), image_name="face.png")
    object_info["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] = []
    object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"] = [[]]
    (problem,) = missing_models(upscale, object_info)
    assert "'RealESRGAN_x2plus.pth'" in problem and "ComfyUI/models/upscale_models" in problem
    (problem,) = missing_models(image_model, object_info)
    assert "'sd_xl_base_1.0.safetensors'" in problem and "ComfyUI/models/checkpoints" in problem


def _with_v033_nodes(object_info, interpolation_files=("rife49.pth",)):
    """object_info plus what ComfyUI v0.33.0 answers for its frame interpolation and Math Expression nodes."""
    autogrow = {"template": {"input": {"required": {"value": ["FLOAT,INT,BOOLEAN", {}]}},
                             "names": list("abcdefghijklmnopqrstuvwxyz"), "min": 1}}
    object_info |= {
        "FrameInterpolationModelLoader": _entry({"model_name": ["COMBO", {"options": list(interpolation_files)}]}),
        "FrameInterpolate": _entry({"interp_model": ["INTERP_MODEL", {}], "images": ["IMAGE", {}],
                                    "multiplier": ["INT", {"default": 2, "min": 2, "max": 16}]}),
        "ComfyMathExpression": _entry({"expression": ["STRING", {"default": "a + b", "multiline": True}],
                                       "values": ["COMFY_AUTOGROW_V3", autogrow]}),
    }
    return object_info


def test_interpolate_workflow_converts_and_names_its_model_file(object_info):
    """mova_i2va_interpolate converts on a server with v0.33's core nodes: the Math Expression gets MOVA
    Conditioning's fps under its Autogrow socket's name (values.a) and feeds Create Video; a missing RIFE file is
    named with its folder. A server without those nodes is told the workflow needs a newer ComfyUI."""
    with pytest.raises(WorkflowError, match=r"FrameInterpolationModelLoader.*core node of newer ComfyUI.*v0\.33\.0 or later"):
        ui_to_api(_workflow("mova_i2va_interpolate.json"), object_info)
    info = _with_v033_nodes(object_info)
    prompt = ui_to_api(_workflow("mova_i2va_interpolate.json"), info)
    set_parameters(prompt, image_name="example.png", seed=5)
    assert missing_models(prompt, info) == []
    create = _node(prompt, "CreateVideo")["inputs"]
    interp = prompt[create["images"][0]]
    assert interp["class_type"] == "FrameInterpolate" and interp["inputs"]["multiplier"] == 2
    assert prompt[interp["inputs"]["interp_model"][0]]["inputs"] == {"model_name": "rife49.pth"}
    math = prompt[create["fps"][0]]
    assert math["class_type"] == "ComfyMathExpression" and create["fps"][1] == 0  # its FLOAT output
    assert math["inputs"]["expression"] == "a * 2"
    assert prompt[math["inputs"]["values.a"][0]]["class_type"] == "MovaConditioning"
    assert "values.b" not in math["inputs"]  # the empty socket Autogrow keeps after the last link is not sent
    (problem,) = missing_models(prompt, _with_v033_nodes(object_info, interpolation_files=()))
    assert "'rife49.pth'" in problem and "ComfyUI/models/frame_interpolation" in problem
