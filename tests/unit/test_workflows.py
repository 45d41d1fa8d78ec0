"""The example workflows: they parse, links are consistent, every node is ours or stock ComfyUI, widget values fit
the schemas, the MOVA graph is wired end to end, the model files they name are declared truthfully, and every one
is laid out tidily with an up-to-date thumbnail."""

import hashlib
import json
import sys
from pathlib import Path

import pytest

from comfyui_mova.nodes.catalog import NODES_BY_ID
from comfyui_mova.nodes.conditioning.spec import CONDITIONING
from comfyui_mova.nodes.lora.spec import SAVE_LORA
from comfyui_mova.nodes.native.spec import GUIDER, SCHEDULER
from comfyui_mova.nodes.parallel.spec import PARALLEL
from comfyui_mova.nodes.prompts.spec import PROMPT_ENHANCE
from comfyui_mova.nodes.sampling.spec import AUDIO_DECODE, SAMPLER, SAMPLER_OPTIONS_NODE
from comfyui_mova.nodes.training.spec import TRAIN_LORA

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "example_workflows"
FILES = sorted(WORKFLOWS.glob("*.json"))
sys.path.insert(0, str(ROOT / "scripts"))
import workflow_layout  # noqa: E402
from workflow_api import NEWER_CORE, NEWER_CORE_NODES  # noqa: E402

SAMPLING = [p for p in FILES if '"MovaSampler"' in p.read_text(encoding="utf-8")]
NATIVE = [p for p in FILES if '"SamplerCustomAdvanced"' in p.read_text(encoding="utf-8")]  # stock samplers

# Stock ComfyUI nodes the workflows may use: widget names in order (ComfyUI v0.3.64; LoadImage stores its
# upload button's value after the file name).
STOCK_WIDGETS = {
    "CLIPLoader": ("clip_name", "type", "device"),
    "CLIPTextEncode": ("text",),
    "VAELoader": ("vae_name",),
    "LoadImage": ("image", "upload"),
    "LoadAudio": ("audio", "audioUI", "upload"),
    "LoadVideo": ("file", "upload"),
    "GetVideoComponents": (),
    "VAEDecode": (),
    "VAEDecodeTiled": ("tile_size", "overlap", "temporal_size", "temporal_overlap"),
    "CreateVideo": ("fps",),
    "SaveVideo": ("filename_prefix", "format", "codec"),
    "SaveAudio": ("filename_prefix",),
    "PreviewAudio": (),
    "PreviewImage": (),
    "Note": ("text",),
    "MarkdownNote": ("text",),
    "RandomNoise": ("noise_seed", "control_after_generate"),
    "KSamplerSelect": ("sampler_name",),
    "SamplerCustomAdvanced": (),
    "UpscaleModelLoader": ("model_name",),
    "ImageUpscaleWithModel": (),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "FrameInterpolationModelLoader": ("model_name",),   # ComfyUI v0.33.0
    "FrameInterpolate": ("multiplier",),                # ComfyUI v0.33.0
    "ComfyMathExpression": ("expression",),             # ComfyUI v0.33.0 (its values are Autogrow sockets)
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "KSampler": ("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
}
STOCK_SOCKETS = {
    "CLIPTextEncode": {"clip": "CLIP"},
    "VAEDecode": {"samples": "LATENT", "vae": "VAE"},
    "CreateVideo": {"images": "IMAGE", "audio": "AUDIO", "fps": "FLOAT"},
    "SaveVideo": {"video": "VIDEO"},
    "PreviewAudio": {"audio": "AUDIO"},
    "PreviewImage": {"images": "IMAGE"},
    "GetVideoComponents": {"video": "VIDEO"},
    "SamplerCustomAdvanced": {"noise": "NOISE", "guider": "GUIDER", "sampler": "SAMPLER", "sigmas": "SIGMAS",
                              "latent_image": "LATENT"},
    "ImageUpscaleWithModel": {"upscale_model": "UPSCALE_MODEL", "image": "IMAGE"},
    "KSampler": {"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "latent_image": "LATENT"},
    "FrameInterpolate": {"interp_model": "INTERP_MODEL", "images": "IMAGE"},
    "ComfyMathExpression": {"values.a": "FLOAT,INT,BOOLEAN", "values.b": "FLOAT,INT,BOOLEAN"},
}
# Core image nodes between MOVA's decoded frames and Create Video that keep the number of frames (so the fps and
# the sound stay as MOVA Conditioning made them): the input that takes the frames.
FRAME_KEEPING = {"ImageUpscaleWithModel": "image"}
# Core nodes that put new frames between MOVA's (ComfyUI v0.33.0): the input that takes the frames. Create Video's
# fps must then be MOVA Conditioning's times the multiplier, through a Math Expression.
FRAME_MULTIPLYING = {"FrameInterpolate": "images"}
LOADER_FOLDERS = {"CLIPLoader": "text_encoders", "VAELoader": "vae", "CheckpointLoaderSimple": "checkpoints"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _values(node_spec, node) -> dict:
    """A MOVA node's widget values by name (control_after_generate entries skipped)."""
    values, position = {}, 0
    for widget in node_spec.widgets:
        if position >= len(node["widgets_values"]):  # saved before this widget was appended
            break
        values[widget.name] = node["widgets_values"][position]
        position += widget.stored_values
    return values


def _notes(workflow) -> str:
    return " ".join(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote"))


def _by_type(workflow, node_type):
    return [n for n in workflow["nodes"] if n["type"] == node_type]


def _source(workflow, node, input_name):
    """(source node, output name) feeding ``input_name`` of ``node``, or None."""
    entry = next((i for i in node["inputs"] if i["name"] == input_name), None)
    if entry is None or entry["link"] is None:
        return None
    link = next(lk for lk in workflow["links"] if lk[0] == entry["link"])
    src = next(n for n in workflow["nodes"] if n["id"] == link[1])
    return src, src["outputs"][link[2]]["name"]


def _loader(workflow, node, input_name):
    """The loader behind ``input_name`` of ``node``, looking through MOVA LoRA Loaders."""
    src, output = _source(workflow, node, input_name)
    while src["type"] == "MovaLoraLoader":
        src, output = _source(workflow, src, output)
    return src


def test_workflows_folder_is_example_workflows():
    """ComfyUI's template browser reads example_workflows/; a second folder would list every workflow twice."""
    assert not (ROOT / "workflows").exists()
    assert FILES


def test_all_workflows_shipped():
    assert {p.name for p in FILES} >= {"mova_i2va.json", "mova_t2va.json", "mova_i2va_lora.json",
                                       "mova_i2va_dual_cfg.json", "mova_i2va_enhanced.json", "mova_flf2va.json",
                                       "mova_a2v.json", "mova_v2a.json", "mova_extend.json", "mova_train_lora.json",
                                       "mova_i2va_native.json", "mova_i2va_upscale.json",
                                       "mova_t2va_image_model.json", "mova_i2va_interpolate.json"}
    assert {p.name for p in NATIVE} == {"mova_i2va_native.json"}
    assert {p.name for p in SAMPLING} == {p.name for p in FILES} - {"mova_train_lora.json", "mova_i2va_native.json"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_links_consistent(path):
    wf = _load(path)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    link_ids = [lk[0] for lk in wf["links"]]
    assert len(set(link_ids)) == len(link_ids), "duplicate link ids"
    assert wf["last_node_id"] >= max(nodes) and wf["last_link_id"] >= max(link_ids)
    for link_id, src, slot, dst, dst_slot, kind in wf["links"]:
        out = nodes[src]["outputs"][slot]
        assert link_id in (out["links"] or []) and out["type"] == kind
        entry = nodes[dst]["inputs"][dst_slot]
        # an input of several types ("FLOAT,INT,BOOLEAN": Math Expression's values) takes a link of any of them
        assert entry["link"] == link_id and kind in entry["type"].split(",")
    for node in wf["nodes"]:
        for entry in node["inputs"]:
            assert entry["link"] is None or entry["link"] in link_ids
        for out in node["outputs"]:
            for link_id in out["links"] or []:
                assert any(lk[0] == link_id and lk[1] == node["id"] for lk in wf["links"])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_nodes_are_ours_or_stock_with_valid_widgets(path):
    wf = _load(path)
    for node in wf["nodes"]:
        kind, values = node["type"], node["widgets_values"]
        if kind in NODES_BY_ID:
            node_spec = NODES_BY_ID[kind]
            # A workflow saved before a widget, input or output was appended lacks it; the frontend (and
            # scripts/workflow_api.py) fill in its default. Everything present must sit where the spec has it.
            position, present = 0, 0
            for widget in node_spec.widgets:
                if position >= len(values):
                    assert widget.default is not None, f"{kind}: {widget.name} missing and has no default"
                    continue
                value = values[position]
                assert widget.problem(value) is None, f"{kind}: {widget.problem(value)}"
                if widget.control_after_generate:
                    assert values[position + 1] in CONTROL_VALUES
                position += widget.stored_values
                present = position
            assert len(values) == present, kind
            sockets = [(i["name"], i["type"]) for i in node["inputs"] if "widget" not in i]
            assert sockets == [(s.name, s.type) for s in node_spec.sockets][:len(sockets)], kind
            assert all(s.optional for s in node_spec.sockets[len(sockets):]), kind
            outputs = [(o["name"], o["type"]) for o in node["outputs"]]
            assert outputs == [(o.name, o.type) for o in node_spec.outputs][:len(outputs)], kind
            assert outputs or not node_spec.outputs, kind
        else:
            assert kind in STOCK_WIDGETS, f"{kind} is neither a MOVA node nor a stock node we know"
            assert len(values) == len(STOCK_WIDGETS[kind]), kind
            for entry in node["inputs"]:
                if "widget" in entry:  # a widget turned into an input: one of the node's widgets, same name
                    assert entry["widget"]["name"] == entry["name"] and entry["name"] in STOCK_WIDGETS[kind]
                elif kind in STOCK_SOCKETS:
                    assert STOCK_SOCKETS[kind][entry["name"]] == entry["type"]
        assert node["mode"] == 0, f"{kind} is muted or bypassed"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_model_downloads_are_single_files_with_direct_links(path):
    """properties.models (the frontend's Missing Models dialog) names only files it can download: single
    .safetensors with a direct link, on the node that loads them; the MOVA release folders are in the note."""
    wf = _load(path)
    for node in wf["nodes"]:
        models = node.get("properties", {}).get("models")
        if node["type"].startswith("Mova"):
            assert models is None, f"{node['type']} declares {models}: the release folders cannot be downloaded"
        if node["type"] in LOADER_FOLDERS:
            (entry,) = models
            assert entry["name"] == node["widgets_values"][0] and entry["name"].endswith(".safetensors")
            assert entry["url"].startswith("https://huggingface.co/") and "/resolve/" in entry["url"]
            assert entry["url"].endswith("/" + entry["name"])
            assert entry["directory"] == LOADER_FOLDERS[node["type"]]
    assert _by_type(wf, "CLIPLoader")[0]["widgets_values"][1] == "wan"
    assert _by_type(wf, "VAELoader")[0]["widgets_values"][0] == "wan_2.1_vae.safetensors"


def _check_sampler(wf, sampler):
    for socket in SAMPLER.sockets:
        if not socket.optional:
            assert _source(wf, sampler, socket.name) is not None, f"MovaSampler.{socket.name} is not connected"
    high, low = _loader(wf, sampler, "high_noise_expert"), _loader(wf, sampler, "low_noise_expert")
    assert _loader(wf, sampler, "audio_tower")["type"] == "MovaAudioTowerLoader"
    assert high["widgets_values"][0].endswith("video_dit") and low["widgets_values"][0].endswith("video_dit_2")
    seed, _, steps, cfg, shift, boundary = sampler["widgets_values"]
    assert (steps, cfg, shift, boundary) == (50, 5.0, 5.0, 0.9)


def _decoded(wf, sampler):
    """(VAE Decode, MOVA Audio Decode) of a sampler's outputs."""
    video = [n for n in _by_type(wf, "VAEDecode") if _source(wf, n, "samples") == (sampler, "video_latent")]
    (audio,) = [n for n in _by_type(wf, "MovaAudioDecode") if _source(wf, n, "audio_latent") == (sampler, "audio_latent")]
    for socket in AUDIO_DECODE.sockets:
        assert _source(wf, audio, socket.name) is not None
    return (video[0] if video else None), audio


@pytest.mark.parametrize("path", SAMPLING, ids=lambda p: p.name)
def test_mova_graph_wired_end_to_end(path):
    wf = _load(path)
    (cond,) = _by_type(wf, "MovaConditioning")
    (create,) = _by_type(wf, "CreateVideo")
    (save,) = _by_type(wf, "SaveVideo")
    for socket in CONDITIONING.sockets:
        if not socket.optional:
            assert _source(wf, cond, socket.name) is not None, f"MovaConditioning.{socket.name} is not connected"
    for sampler in _by_type(wf, "MovaSampler"):
        _check_sampler(wf, sampler)
    first = next(s for s in _by_type(wf, "MovaSampler") if _source(wf, s, "conditioning") == (cond, "conditioning"))
    assert _source(wf, first, "latent") == (cond, "latent")
    decoded, audio = _decoded(wf, first)
    assert _source(wf, save, "video") == (create, "VIDEO")
    joins = _by_type(wf, "MovaJoin")
    if joins:  # longer clips: the last join's frames, sound and fps
        assert _source(wf, create, "images") == (joins[-1], "images")
        assert _source(wf, create, "audio") == (joins[-1], "audio")
        assert _source(wf, create, "fps") == (joins[-1], "fps")
    else:
        assert _source(wf, create, "audio") == (audio, "audio")
        multiplier = 1
        if _source(wf, cond, "video") is not None:  # video -> audio: the video's own frames
            assert _source(wf, create, "images") == (cond, "video") and decoded is None
        else:
            frames = _source(wf, create, "images")
            while frames[0]["type"] in FRAME_KEEPING | FRAME_MULTIPLYING:
                if frames[0]["type"] in FRAME_MULTIPLYING:  # an interpolator: new frames between MOVA's
                    multiplier *= frames[0]["widgets_values"][0]
                    frames = _source(wf, frames[0], FRAME_MULTIPLYING[frames[0]["type"]])
                else:  # an upscaler: other sizes, the same frames
                    frames = _source(wf, frames[0], FRAME_KEEPING[frames[0]["type"]])
            assert frames == (decoded, "IMAGE")
        if multiplier == 1:
            assert _source(wf, create, "fps") == (cond, "fps")  # the video's fps is the one the audio was sized for
        else:  # the frame rate the new frames need: MOVA's fps times the multiplier
            math, output = _source(wf, create, "fps")
            assert math["type"] == "ComfyMathExpression" and output == "FLOAT"
            assert math["widgets_values"] == [f"a * {multiplier}"] and _source(wf, math, "values.a") == (cond, "fps")
    sound = _source(wf, create, "audio")
    assert any(_source(wf, n, "audio") == sound for n in _by_type(wf, "PreviewAudio"))
    for encoder in [n for n in wf["nodes"] if n["type"] in ("MovaConditioning", "MovaExtend")]:
        pos, _ = _source(wf, encoder, "positive")
        assert pos["type"] == "MovaTextEncode"
        enhancer = _source(wf, pos, "text")
        if enhancer is None:
            assert "The audio shows" in pos["widgets_values"][0]
        else:  # the caption comes from the language model
            assert enhancer[0]["type"] == "MovaPromptEnhance" and enhancer[1] == "caption"
        neg, _ = _source(wf, encoder, "negative")
        assert neg["type"] == "MovaTextEncode"
        for text_node in (pos, neg):
            assert _source(wf, text_node, "clip")[0]["type"] == "CLIPLoader"
    width, height, length, fps = cond["widgets_values"]
    assert (width, height, length, fps) == (640, 352, 193, 24)


def test_native_workflow_wired_end_to_end():
    """mova_i2va_native: SamplerCustomAdvanced with Random Noise, euler, MOVA Scheduler (official) and the MOVA Guider
    on MOVA Conditioning's av_latent, the result split for the two decoders; official settings, as mova_i2va."""
    wf = _load(WORKFLOWS / "mova_i2va_native.json")
    (cond,) = _by_type(wf, "MovaConditioning")
    (guider,) = _by_type(wf, "MovaGuider")
    (sampler,) = _by_type(wf, "SamplerCustomAdvanced")
    (split,) = _by_type(wf, "MovaSeparateAVLatent")
    (create,) = _by_type(wf, "CreateVideo")
    assert _loader(wf, guider, "high_noise_expert")["widgets_values"][0].endswith("video_dit")
    assert _loader(wf, guider, "low_noise_expert")["widgets_values"][0].endswith("video_dit_2")
    assert _loader(wf, guider, "audio_tower")["type"] == "MovaAudioTowerLoader"
    assert _source(wf, guider, "conditioning") == (cond, "conditioning") and _source(wf, guider, "options") is None
    assert _values(GUIDER, guider) == {"cfg": 5.0, "shift": 5.0, "boundary_ratio": 0.9}
    noise, _ = _source(wf, sampler, "noise")
    chosen, _ = _source(wf, sampler, "sampler")
    schedule, _ = _source(wf, sampler, "sigmas")
    assert noise["type"] == "RandomNoise" and chosen["type"] == "KSamplerSelect" and chosen["widgets_values"] == ["euler"]
    assert schedule["type"] == "MovaScheduler" and _source(wf, schedule, "guider") == (guider, "guider")
    assert _values(SCHEDULER, schedule) == {"steps": 50, "scheduler": "official"}
    assert _source(wf, sampler, "guider") == (guider, "guider")
    assert _source(wf, sampler, "latent_image") == (cond, "av_latent")
    assert _source(wf, split, "av_latent") == (sampler, "output")
    (video,) = [n for n in _by_type(wf, "VAEDecode") if _source(wf, n, "samples") == (split, "video_latent")]
    (audio,) = [n for n in _by_type(wf, "MovaAudioDecode") if _source(wf, n, "audio_latent") == (split, "audio_latent")]
    assert _source(wf, create, "images") == (video, "IMAGE") and _source(wf, create, "audio") == (audio, "audio")
    assert _source(wf, create, "fps") == (cond, "fps")
    assert _source(wf, _by_type(wf, "SaveVideo")[0], "video") == (create, "VIDEO")
    for name in ("positive", "negative"):
        assert _source(wf, cond, name)[0]["type"] == "MovaTextEncode"
    assert _source(wf, cond, "start_image")[0]["type"] == "LoadImage"
    assert cond["widgets_values"] == [640, 352, 193, 24]
    assert "ComfyUI 0.8" in _notes(wf)


def test_i2va_has_a_start_image_and_t2va_does_not():
    i2va, t2va = _load(WORKFLOWS / "mova_i2va.json"), _load(WORKFLOWS / "mova_t2va.json")
    (cond,) = _by_type(i2va, "MovaConditioning")
    assert _source(i2va, cond, "start_image")[0]["type"] == "LoadImage"
    (cond,) = _by_type(t2va, "MovaConditioning")
    assert _source(t2va, cond, "start_image") is None and not _by_type(t2va, "LoadImage")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_note_lists_model_files_and_folders(path):
    wf = _load(path)
    assert _by_type(wf, "MarkdownNote") and not _by_type(wf, "Note")
    text = _notes(wf)
    for needle in ("models/diffusion_models/MOVA-360p/", "video_dit/", "video_dit_2/", "audio_dit/",
                   "dual_tower_bridge/", "models/vae/MOVA-360p/audio_vae/", "wan_2.1_vae.safetensors",
                   "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "hf download OpenMOSS-Team/MOVA-360p"):
        assert needle in text


def test_lora_workflow_patches_all_three_parts():
    wf = _load(WORKFLOWS / "mova_i2va_lora.json")
    (sampler,) = _by_type(wf, "MovaSampler")
    (lora,) = _by_type(wf, "MovaLoraLoader")
    for name in ("high_noise_expert", "low_noise_expert", "audio_tower"):
        assert _source(wf, sampler, name) == (lora, name)  # each output to the same-named sampler input
    name, *strengths = lora["widgets_values"]
    assert name.endswith("lora_weights.pt") and strengths == [1.0, 1.0, 1.0, 1.0]
    notes = _notes(wf)
    assert "models/loras/" in notes and "lora_config.pt" in notes


def test_dual_cfg_workflow_sets_only_the_bridge_scale():
    wf = _load(WORKFLOWS / "mova_i2va_dual_cfg.json")
    (sampler,) = _by_type(wf, "MovaSampler")
    (options,) = _by_type(wf, "MovaSamplerOptions")
    assert _source(wf, sampler, "options") == (options, "options")
    values = _values(SAMPLER_OPTIONS_NODE, options)
    defaults = {w.name: w.default for w in SAMPLER_OPTIONS_NODE.widgets}
    assert values == {name: defaults[name] for name in values} | {"bridge_cfg": 3.5}  # later widgets: defaults
    assert defaults["bridge_cfg"] == 1.0  # unplugged or default: the official sampler


@pytest.mark.parametrize("name", ["mova_i2va.json", "mova_t2va.json"])
def test_plain_workflows_use_official_sampling(name):
    wf = _load(WORKFLOWS / name)
    assert not _by_type(wf, "MovaLoraLoader") and not _by_type(wf, "MovaSamplerOptions")
    (sampler,) = _by_type(wf, "MovaSampler")
    assert _source(wf, sampler, "options") is None


def test_enhanced_workflow_feeds_idea_and_first_frame_to_the_enhancer():
    """Idea + the first frame -> MOVA Prompt Enhance -> the positive prompt; the rest is the i2va graph."""
    wf = _load(WORKFLOWS / "mova_i2va_enhanced.json")
    (enhancer,) = _by_type(wf, "MovaPromptEnhance")
    (cond,) = _by_type(wf, "MovaConditioning")
    image, _ = _source(wf, cond, "start_image")
    assert _source(wf, enhancer, "image") == (image, "IMAGE")  # the same picture MOVA starts from
    values = _values(PROMPT_ENHANCE, enhancer)
    defaults = {w.name: w.default for w in PROMPT_ENHANCE.widgets}
    assert values == defaults | {"idea": values["idea"]} and '"' in values["idea"]  # speech quoted in the idea
    assert values["api_key_env"] == "" and values["base_url"].startswith("http://localhost:")  # local, no key
    plain = _load(WORKFLOWS / "mova_i2va.json")
    assert {n["type"] for n in wf["nodes"]} - {n["type"] for n in plain["nodes"]} == {"MovaPromptEnhance"}
    notes = _notes(wf)
    assert "ollama pull" in notes and "MOVA_LLM_HOSTS" in notes and "MOVA_LLM_API_KEY" in notes
    assert "leave this machine" in notes


def test_training_workflow_goes_from_clips_to_a_saved_lora():
    wf = _load(WORKFLOWS / "mova_train_lora.json")
    (dataset,) = _by_type(wf, "MovaDataset")
    (train,) = _by_type(wf, "MovaTrainLora")
    (save,) = _by_type(wf, "MovaSaveLora")
    (preview,) = _by_type(wf, "PreviewImage")
    assert _source(wf, dataset, "vae")[0]["widgets_values"][0] == "wan_2.1_vae.safetensors"
    assert _source(wf, dataset, "audio_vae")[0]["type"] == "MovaAudioVAELoader"
    clip, _ = _source(wf, dataset, "clip")
    assert clip["type"] == "CLIPLoader" and clip["widgets_values"][1] == "wan"
    assert _source(wf, train, "dataset") == (dataset, "dataset")
    assert _loader(wf, train, "high_noise_expert")["widgets_values"][0].endswith("video_dit")
    assert _loader(wf, train, "low_noise_expert")["widgets_values"][0].endswith("video_dit_2")
    assert _loader(wf, train, "audio_tower")["type"] == "MovaAudioTowerLoader"
    assert _source(wf, save, "lora") == (train, "lora") and _source(wf, preview, "images") == (train, "loss_curve")
    values = _values(TRAIN_LORA, train)
    assert (values["rank"], values["alpha"], values["learning_rate"]) == (8, 8.0, 0.0001)  # the official recipe
    assert all(values[n] for n in ("train_high_noise", "train_low_noise", "train_audio", "train_bridge", "resume"))
    assert _values(SAVE_LORA, save)["overwrite"] is False
    width, height, length, fps, _ = dataset["widgets_values"][1:]
    assert (width, height, length, fps) == (640, 352, 193, 24)
    notes = _notes(wf)
    assert "ComfyUI/input/mova_clips/" in notes and ".txt" in notes and "output/mova_training" in notes


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_layout_is_tidy(path):
    """Stage groups, every node in its group, nothing overlapping, the note top-left and everything seen at a
    readable saved zoom in a 1920x1080 window (scripts/workflow_layout.py says what each check means)."""
    wf = _load(path)
    assert workflow_layout.problems(wf) == []
    titles = [g["title"] for g in wf["groups"]]
    assert titles[0] == "Models" and titles[-1] == "Output"
    if path in SAMPLING or path in NATIVE:
        assert titles == ["Models", "Prompt", "Sampling", "Output"]
    assert workflow_layout.note_title(wf)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_layout_is_the_scripts(path):
    """Laid out by scripts/make_thumbnails.py (run it after adding or editing a workflow)."""
    wf = _load(path)
    assert workflow_layout.tidy(wf) == wf, f"{path.name} is not laid out: run scripts/make_thumbnails.py"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_workflow_has_its_current_thumbnail(path):
    """NAME.jpg beside NAME.json (the template browser's card), made from the workflow as it is now."""
    from PIL import Image
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"{thumb.name} is missing: run scripts/make_thumbnails.py"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and image.size == (640, 640)
        assert image.info.get("comment") == f"sha256:{digest}".encode(), \
            f"{thumb.name} shows an older {path.name}: run scripts/make_thumbnails.py"


def test_sizes_are_spelled_width_x_height_everywhere():
    """One spelling: 640x352 and 1280x720 (width x height, as MOVA Conditioning's widgets), in the README and the
    workflows alike."""
    import re
    texts = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    texts |= {p.name: _notes(_load(p)) for p in FILES}
    for name, text in texts.items():
        for width, spaces, height in re.findall(r"\b(\d{3,4})( ?)x\2(\d{3,4})\b", text):
            assert not spaces, f"{name}: '{width} x {height}' (write {width}x{height})"
            if {int(width), int(height)} in ({640, 352}, {1280, 720}):
                assert int(width) > int(height), f"{name}: {width}x{height} is height first"


def _givens(wf):
    (cond,) = _by_type(wf, "MovaConditioning")
    return cond, {s.name: _source(wf, cond, s.name) for s in CONDITIONING.sockets if s.optional}


def test_first_last_frame_workflow():
    wf = _load(WORKFLOWS / "mova_flf2va.json")
    _, given = _givens(wf)
    (start, _), (end, _) = given["start_image"], given["end_image"]
    assert start["type"] == end["type"] == "LoadImage" and start is not end
    assert given["audio"] is None and given["video"] is None


def test_sound_to_video_workflow():
    wf = _load(WORKFLOWS / "mova_a2v.json")
    _, given = _givens(wf)
    assert given["start_image"][0]["type"] == "LoadImage" and given["audio"][0]["type"] == "LoadAudio"
    assert given["end_image"] is None and given["video"] is None
    assert not _by_type(wf, "MovaSamplerOptions")  # the official sampler settings to start from


def test_video_to_audio_workflow():
    wf = _load(WORKFLOWS / "mova_v2a.json")
    cond, given = _givens(wf)
    (components,) = _by_type(wf, "GetVideoComponents")
    assert given["video"] == (components, "images") and given["video_fps"] == (components, "fps")
    assert _source(wf, cond, "fps") == (components, "fps")  # the clip runs at the video's frame rate
    assert _source(wf, components, "video")[0]["type"] == "LoadVideo"
    assert given["start_image"] is None and given["audio"] is None and not _by_type(wf, "VAEDecode")


def test_extend_workflow_two_prompts_about_16_seconds():
    wf = _load(WORKFLOWS / "mova_extend.json")
    cond, _ = _givens(wf)
    (extend,) = _by_type(wf, "MovaExtend")
    (join,) = _by_type(wf, "MovaJoin")
    first, second = sorted(_by_type(wf, "MovaSampler"), key=lambda n: n["id"])
    decoded1, audio1 = _decoded(wf, first)
    decoded2, audio2 = _decoded(wf, second)
    assert _source(wf, extend, "images") == (decoded1, "IMAGE") and _source(wf, extend, "audio") == (audio1, "audio")
    assert _source(wf, extend, "fps") == (cond, "fps")
    assert _source(wf, second, "conditioning") == (extend, "conditioning")
    assert _source(wf, second, "latent") == (extend, "latent")
    assert _source(wf, join, "extension") == (extend, "extension")
    assert _source(wf, join, "images") == (decoded2, "IMAGE") and _source(wf, join, "audio") == (audio2, "audio")
    prompts = {_source(wf, node, "positive")[0]["id"] for node in (cond, extend)}
    assert len(prompts) == 2  # each clip its own prompt
    assert first["widgets_values"][0] != second["widgets_values"][0]  # and its own seed
    length, overlap, fps, crossfade = extend["widgets_values"]
    frames = cond["widgets_values"][2] + length - overlap
    assert abs(frames / fps - 16.0) < 0.1 and 0 < crossfade < overlap / fps


def test_parallel_workflow_adds_only_mova_parallel():
    """mova_i2va_parallel: the i2va graph with MOVA Parallel at its defaults (every GPU, Ulysses) feeding the MOVA
    Sampler's options; its note points at the guide."""
    wf = _load(WORKFLOWS / "mova_i2va_parallel.json")
    (sampler,) = _by_type(wf, "MovaSampler")
    (parallel,) = _by_type(wf, "MovaParallel")
    assert _source(wf, sampler, "options") == (parallel, "options") and _source(wf, parallel, "options") is None
    assert _values(PARALLEL, parallel) == {w.name: w.default for w in PARALLEL.widgets}
    plain = _load(WORKFLOWS / "mova_i2va.json")
    assert {n["type"] for n in wf["nodes"]} - {n["type"] for n in plain["nodes"]} == {"MovaParallel"}
    assert "docs/multi_gpu.md" in _notes(wf)


def test_upscale_workflow_adds_only_the_upscaler_between_decode_and_create_video():
    """mova_i2va_upscale: the i2va graph with Load Upscale Model + Upscale Image (using Model) between MOVA's VAE
    Decode and Create Video; Create Video keeps MOVA Conditioning's fps and MOVA Audio Decode's sound."""
    wf = _load(WORKFLOWS / "mova_i2va_upscale.json")
    (sampler,) = _by_type(wf, "MovaSampler")
    (cond,) = _by_type(wf, "MovaConditioning")
    (upscale,) = _by_type(wf, "ImageUpscaleWithModel")
    (create,) = _by_type(wf, "CreateVideo")
    decoded, audio = _decoded(wf, sampler)
    assert _source(wf, upscale, "image") == (decoded, "IMAGE")
    loader, _ = _source(wf, upscale, "upscale_model")
    assert loader["type"] == "UpscaleModelLoader" and loader["widgets_values"] == ["RealESRGAN_x2plus.pth"]
    assert _source(wf, create, "images") == (upscale, "IMAGE")
    assert _source(wf, create, "fps") == (cond, "fps") and _source(wf, create, "audio") == (audio, "audio")
    plain = _load(WORKFLOWS / "mova_i2va.json")
    assert {n["type"] for n in wf["nodes"]} - {n["type"] for n in plain["nodes"]} == {"UpscaleModelLoader",
                                                                                    "ImageUpscaleWithModel"}
    assert len(wf["nodes"]) == len(plain["nodes"]) + 2
    notes = _notes(wf)
    assert "models/upscale_models/" in notes and "RealESRGAN_x2plus.pth" in notes and "in sync" in notes


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_examples_needing_newer_comfyui_say_so(path):
    """An example with core nodes that ComfyUI v0.3.64 and v0.8.0 lack (workflow_api.NEWER_CORE_NODES) says at the
    top of its note which ComfyUI it needs; the others use none of them (they open in every tested version)."""
    wf = _load(path)
    newer = {n["type"] for n in wf["nodes"]} & set(NEWER_CORE_NODES)
    note = workflow_layout.notes(wf)[0]["widgets_values"][0]
    first_lines = "\n".join(note.splitlines()[:3])
    assert (f"Needs {NEWER_CORE}" in first_lines) == bool(newer), (path.name, newer)


def test_interpolate_workflow_doubles_the_frames_and_the_fps():
    """mova_i2va_interpolate: the i2va graph with Load Frame Interpolation Model + Run Frame Interpolation Model
    (multiplier 2) between MOVA's VAE Decode and Create Video; Create Video's fps is a Math Expression `a * 2` of MOVA
    Conditioning's, its sound MOVA Audio Decode's; the note names the model folder, a RIFE file and the
    1/(2 fps) the video ends before the sound."""
    wf = _load(WORKFLOWS / "mova_i2va_interpolate.json")
    (sampler,) = _by_type(wf, "MovaSampler")
    (cond,) = _by_type(wf, "MovaConditioning")
    (interp,) = _by_type(wf, "FrameInterpolate")
    (math,) = _by_type(wf, "ComfyMathExpression")
    (create,) = _by_type(wf, "CreateVideo")
    decoded, audio = _decoded(wf, sampler)
    assert _source(wf, interp, "images") == (decoded, "IMAGE") and interp["widgets_values"] == [2]
    loader, _ = _source(wf, interp, "interp_model")
    assert loader["type"] == "FrameInterpolationModelLoader" and loader["widgets_values"] == ["rife49.pth"]
    assert _source(wf, create, "images") == (interp, "IMAGE") and _source(wf, create, "audio") == (audio, "audio")
    assert _source(wf, create, "fps") == (math, "FLOAT") and math["widgets_values"] == ["a * 2"]
    assert _source(wf, math, "values.a") == (cond, "fps")
    upscale = _load(WORKFLOWS / "mova_i2va_upscale.json")
    types = {n["type"] for n in wf["nodes"]}
    assert types - {n["type"] for n in upscale["nodes"]} == set(NEWER_CORE_NODES)
    assert {n["type"] for n in upscale["nodes"]} - types == {"UpscaleModelLoader", "ImageUpscaleWithModel"}
    notes = _notes(wf)
    assert "models/frame_interpolation/" in notes and "rife49.pth" in notes and "1/(2 fps)" in notes
    assert "2N-1" in notes and "ComfyUI-Frame-Interpolation" in notes


def test_image_model_workflow_makes_the_first_frame():
    """mova_t2va_image_model: Load Checkpoint's model, CLIP and VAE make the first frame (CLIP Text Encode positive
    and negative, Empty Latent Image, KSampler, VAE Decode) that MOVA Conditioning starts from; the size is the
    video's aspect; the rest is the i2va graph without Load Image."""
    wf = _load(WORKFLOWS / "mova_t2va_image_model.json")
    (cond,) = _by_type(wf, "MovaConditioning")
    (ckpt,) = _by_type(wf, "CheckpointLoaderSimple")
    (ksampler,) = _by_type(wf, "KSampler")
    (empty,) = _by_type(wf, "EmptyLatentImage")
    frame, output = _source(wf, cond, "start_image")
    assert frame["type"] == "VAEDecode" and output == "IMAGE"
    assert _source(wf, frame, "samples") == (ksampler, "LATENT") and _source(wf, frame, "vae") == (ckpt, "VAE")
    assert _source(wf, ksampler, "model") == (ckpt, "MODEL")
    assert _source(wf, ksampler, "latent_image") == (empty, "LATENT")
    texts = [_source(wf, ksampler, name)[0] for name in ("positive", "negative")]
    assert [t["type"] for t in texts] == ["CLIPTextEncode"] * 2 and texts[0] is not texts[1]
    assert all(_source(wf, t, "clip") == (ckpt, "CLIP") for t in texts)
    assert ckpt["widgets_values"] == ["sd_xl_base_1.0.safetensors"]
    width, height, batch = empty["widgets_values"]
    assert batch == 1 and width % 16 == 0 and height % 16 == 0
    mova_width, mova_height = cond["widgets_values"][:2]
    assert abs(width / height - mova_width / mova_height) / (mova_width / mova_height) < 0.05  # little is cropped
    assert not _by_type(wf, "LoadImage")
    plain = _load(WORKFLOWS / "mova_i2va.json")
    assert {n["type"] for n in wf["nodes"]} - {n["type"] for n in plain["nodes"]} == {
        "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler"}
    notes = _notes(wf)
    assert "issue #38" in notes and "models/checkpoints/" in notes and "centre-crops" in notes
    assert "1280x720" in notes and "640x352" in notes


def test_image_model_first_frame_stacks_with_the_prompt():
    """The image model's nodes sit in the Prompt group (its VAE Decode too: it makes the first frame, not MOVA's
    video), MOVA's VAE Decode in Output."""
    wf = _load(WORKFLOWS / "mova_t2va_image_model.json")
    placed = {n["id"]: workflow_layout.group_of(workflow_layout.placement(wf, n)) for n in wf["nodes"]
              if n["type"] not in workflow_layout.NOTE_TYPES}
    (cond,) = _by_type(wf, "MovaConditioning")
    frame, _ = _source(wf, cond, "start_image")
    assert placed[frame["id"]] == "Prompt"
    assert all(placed[n["id"]] == "Prompt" for n in wf["nodes"] if n["type"] in ("KSampler", "EmptyLatentImage"))
    (sampler,) = _by_type(wf, "MovaSampler")
    decoded, _ = _decoded(wf, sampler)
    assert placed[decoded["id"]] == "Output"
