"""Issue 20's cases of classes 6-8 (paths, input domains, workflow files) for issue20_cases.py: the converter's
command line, MOVA Train LoRA's run folder and MOVA Save LoRA's paths as the nodes make them, MOVA Dataset's clip
folder, real clips and caption files, the nodes' input checks (what checked_inputs runs before each execute), the
MOVA Guider's SIGMAS check, and scripts/workflow_api.py on the shipped i2va workflow."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import torch

from clip_files import write_clip
from comfyui_mova.mova_model import convert
from comfyui_mova.mova_model.files.names import make_folder
from comfyui_mova.nodes.catalog import ALL_NODES
from comfyui_mova.nodes.conditioning.audio_input import audio_waveform
from comfyui_mova.nodes.conditioning.spec import EXTEND
from comfyui_mova.nodes.conditioning.video_input import take_video
from comfyui_mova.nodes.input_values import checked_values
from comfyui_mova.nodes.lora.spec import LORA_LOADER
from comfyui_mova.nodes.native.checks import check_native_sigmas
from comfyui_mova.nodes.native.spec import GUIDER
from comfyui_mova.nodes.sampling.spec import SAMPLER
from comfyui_mova.nodes.spec_types import WIDGET_KINDS, Widget
from comfyui_mova.nodes.training.clip_folder import FOLDERS_ENV, resolve_clip_folder
from comfyui_mova.nodes.training.dataset import check_clips
from comfyui_mova.nodes.training.run import RUN_NAME, lora_save_paths, run_folder
from issue20_cases import ROOT, Case, Result, attempt
from training_fixtures import toy_request
from workflow_api import missing_models, ui_to_api

# -- 6. paths ------------------------------------------------------------------------------------------------------

def tree(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def converter_prefix(prefix: str, expect_code: int = 2):
    def run(lab) -> Result:
        base = lab.folder("prefix")
        out = base / "deep" / "out"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = convert.main([str(lab.golden_dir / "checkpoint"), str(out), "--prefix", prefix,
                                 "--components", "bridge", "audio_vae"])
        written = tree(base)
        lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
        if code == 2 and lines:
            result = Result("refused", lines[-1])
            return result.check(written == [], f"wrote {written}")
        result = Result("handled" if code == 0 else "raw error", f"exit {code}; wrote {', '.join(tree(out))}")
        return result.check(all(p in ("deep", "deep/out") or p.startswith("deep/out/") for p in written),
                            f"wrote outside out/: {written}")
    return run


def run_name(name: str, file_in_the_way: bool = False):
    """MOVA Train LoRA's run folder as the node makes it (run_folder, then make_folder before any step)."""
    def run(lab) -> Result:
        base = lab.folder("runs") / "mova_training"
        base.mkdir()
        if file_in_the_way:
            (base / name).write_text("a file where the run folder goes")
        result, folder = attempt(lambda: make_folder(run_folder(base, name), f"{RUN_NAME} {name!r}"))
        if folder is not None:
            result.message = f"run folder {folder.relative_to(base.parent)}"
            result.check(folder.is_dir() and folder.is_relative_to(base), "not a folder inside mova_training")
        made = [p for p in tree(base.parent) if not p.startswith("mova_training")]
        return result.check(made == [], f"made outside mova_training: {made}")
    return run


def lora_name(filename: str, file_in_the_way: bool = False):
    def run(lab) -> Result:
        loras = lab.folder("loras") / "loras"
        loras.mkdir()
        if file_in_the_way:
            (loras / f"{filename}_official").write_text("a file")
        result, paths = attempt(lambda: lora_save_paths(loras, filename, overwrite=True, official=True))
        if paths is not None:
            result.message = "saves to " + " and ".join(str(p.relative_to(loras.parent)) for p in paths)
            result.check(all(p.is_relative_to(loras) for p in paths), "outside models/loras")
        made = [p for p in tree(loras.parent) if not p.startswith("loras")]
        return result.check(made == [], f"made outside loras: {made}")
    return run


def clip_folder(folder: str, listed: bool = False):
    def run(lab) -> Result:
        base = lab.folder("input")
        env = {FOLDERS_ENV: str(base / "data")} if listed else {}
        text = folder.replace("<data>", str(base / "data"))
        result, path = attempt(lambda: resolve_clip_folder(text, base / "input", env))
        if path is not None:
            result.message = f"reads clips from {path.relative_to(base)}"
        return result
    return run


# -- 7. domains ----------------------------------------------------------------------------------------------------

def clip_folder_with(lab, name: str, make) -> tuple[Result, object]:
    """A clip folder with one real clip plus what ``make(folder)`` adds, checked as MOVA Dataset checks it."""
    c = lab.golden_cases
    folder = lab.folder(name) / "clips"
    write_clip(folder / "good.mp4", c["num_frames"], c["fps"], c["width"], c["height"], tone=30.0, caption="a clip")
    make(folder, c)
    return attempt(lambda: check_clips(toy_request(folder, c), c["audio_vae"]["sample_rate"]))


def caption(data: bytes, expect_text: str | None = None):
    def run(lab) -> Result:
        def make(folder, c):
            write_clip(folder / "other.mp4", c["num_frames"], c["fps"], c["width"], c["height"], caption=None)
            (folder / "other.txt").write_bytes(data)
        result, value = clip_folder_with(lab, "caption", make)
        if value is not None:
            checks, notes = value
            got = next(ch.clip.caption for ch in checks if ch.clip.path.name == "other.mp4")
            result.message = f"read as {got!r}" + (f"; note: {' '.join(notes)}" if notes else "")
            result.check(got == expect_text, f"read {got!r}, not {expect_text!r}")
        else:
            result.check("other.txt" in result.message, "the caption file is not named")
        return result
    return run


def dangling_clip(lab) -> Result:
    def make(folder, c):
        (folder / "gone.mp4").symlink_to(folder.parent / "elsewhere" / "gone.mp4")
        (folder / "gone.txt").write_text("a clip that was moved")
    result, _ = clip_folder_with(lab, "dangling", make)
    return result.check("gone.mp4" in result.message, "the link is not named")


def integer_sound(dtype, values, expected):
    def run(lab) -> Result:
        audio = {"waveform": torch.tensor(values, dtype=dtype).view(1, 1, -1), "sample_rate": np.int64(16000)}
        result, value = attempt(lambda: audio_waveform(audio, "audio"))
        if value is not None:
            wave, rate = value
            result.message = f"read as {[round(v, 4) for v in wave.flatten().tolist()]} at {rate!r} Hz ({type(rate).__name__})"
            result.check(wave.flatten().tolist() == expected and type(rate) is int, "not scaled by its type")
        return result
    return run


def refused_sound(audio):
    def run(lab) -> Result:
        return attempt(lambda: audio_waveform(audio, "audio"))[0]
    return run


def eight_bit_video(lab) -> Result:
    """A real H.264 clip decoded by PyAV to uint8 frames, handed to MOVA Conditioning's video input."""
    import av
    c = lab.golden_cases
    path = write_clip(lab.folder("video") / "v.mp4", c["num_frames"], c["fps"], 48, 40, caption=None)
    with av.open(str(path)) as container:
        frames = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)])
    result, value = attempt(lambda: take_video(frames, c["num_frames"], float(c["fps"]), None))
    if value is not None:
        used = value[0]
        result.message = (f"uint8 frames read as float 0..1: mean {float(used.mean()):.3f} (the 8-bit mean / 255 is "
                          f"{float(frames[:c['num_frames']].float().mean() / 255):.3f}; white would be 1.000)")
        result.check(torch.equal(used, frames[:c["num_frames"]].float() / 255), "not scaled by 255")
    return result


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al.'s schedule as stock Karras Scheduler makes it (SD 1.5's range by default), with a last 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(high + ramp * (low - high)) ** rho, torch.zeros(1, dtype=torch.float64)]).float()


def sigmas(values):
    def run(lab) -> Result:
        result, value = attempt(lambda: check_native_sigmas(values))
        if value is not None:
            result.message = f"taken: {[round(v, 4) for v in value]}"
        return result
    return run


def widget(spec, values: dict):
    """What checked_inputs runs before a node's execute body: the node's own input checks."""
    def run(lab) -> Result:
        result, value = attempt(lambda: checked_values(spec, values))
        if value is not None:
            result.message = "taken as " + ", ".join(f"{k}={v!r} ({type(v).__name__})" for k, v in value.items())
        return result
    return run


# -- 8. workflow files ---------------------------------------------------------------------------------------------

UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"


def _entry(inputs: dict, optional: dict | None = None, display=None):
    return {"input": {"required": inputs, "optional": optional or {}},
            "input_order": {"required": list(inputs), "optional": list(optional or {})}, "display_name": display}


def _ours(node, files):
    """/object_info of one of our nodes as ComfyUI gives it for V3 nodes."""
    required, optional = {}, {}
    for item in node.inputs:
        target = optional if getattr(item, "optional", False) else required
        if isinstance(item, Widget):
            options = {"default": item.default}
            if item.control_after_generate:
                options["control_after_generate"] = True
            if item.kind == "COMBO":
                options["options"] = list(item.options) if item.options else files[item.model_folder]
            target[item.name] = ["COMBO" if item.kind == "COMBO" else item.kind, options]
        elif item.type in WIDGET_KINDS:
            target[item.name] = [item.type, {"forceInput": True}]
        else:
            target[item.name] = [item.type, {}]
    return _entry(required, optional, node.display_name)


def object_info() -> dict:
    """What a ComfyUI server with this pack and the MOVA-360p files answers, for the i2va workflow's nodes."""
    files = {"diffusion_models": ["MOVA-360p/video_dit", "MOVA-360p/video_dit_2", "MOVA-360p/audio_dit",
                                  "MOVA-360p/dual_tower_bridge"],
             "vae": ["MOVA-360p/audio_vae", "wan_2.1_vae.safetensors"], "loras": ["mine.safetensors"]}
    info = {node.node_id: _ours(node, files) for node in ALL_NODES}
    return info | {
        "CLIPLoader": _entry({"clip_name": [[UMT5]], "type": [["stable_diffusion", "wan"]],
                              "device": [["default", "cpu"], {"advanced": True}]}),
        "VAELoader": _entry({"vae_name": [files["vae"]]}),
        "LoadImage": _entry({"image": [["example.png"], {"image_upload": True}]}),
        "VAEDecode": _entry({"samples": ["LATENT"], "vae": ["VAE"]}),
        "CreateVideo": _entry({"images": ["IMAGE"], "fps": ["FLOAT", {"default": 30.0}]}, {"audio": ["AUDIO"]}),
        "SaveVideo": _entry({"video": ["VIDEO"], "filename_prefix": ["STRING"],
                             "format": ["COMBO", {"options": ["auto", "mp4"]}],
                             "codec": ["COMBO", {"options": ["auto", "h264"]}]}),
        "PreviewAudio": _entry({"audio": ["AUDIO"]}),
    }


def workflow(change=None):
    """The shipped mova_i2va.json changed by ``change(workflow, sampler node)``, converted to an API prompt."""
    def run(lab) -> Result:
        flow = json.loads((ROOT / "example_workflows" / "mova_i2va.json").read_text(encoding="utf-8"))
        sampler = next(n for n in flow["nodes"] if n["type"] == "MovaSampler")
        if change is not None:
            flow = change(flow, sampler) or flow
        info = object_info()
        result, prompt = attempt(lambda: ui_to_api(flow, info))
        problems = missing_models(prompt, info) if prompt is not None else []
        if problems:  # what scripts/run_workflow.py then refuses to run, before anything is queued
            return Result("refused", "refusing to run, the server lacks: " + "; ".join(problems))
        if prompt is not None:
            inputs = next(n for n in prompt.values() if n["class_type"] == "MovaSampler")["inputs"]
            result.message = "MOVA Sampler's inputs: " + ", ".join(f"{k}={v!r}" for k, v in inputs.items()
                                                                     if not isinstance(v, list))
        return result
    return run


def values(new):
    def change(flow, sampler):
        sampler["widgets_values"] = copy.deepcopy(new)
    return change


def short_link(flow, sampler):
    first = next(entry["link"] for entry in sampler["inputs"] if entry.get("link") is not None)
    flow["links"] = [link[:2] if link[0] == first else link for link in flow["links"]]


def cases() -> list[Case]:
    out = []
    add = lambda cls, key, text, expect, run, **kw: out.append(Case(cls, key, text, expect, run, **kw))  # noqa: E731
    # 6. paths
    for key, prefix in [("prefix-up", "../../x"), ("prefix-absolute", "/tmp/x"), ("prefix-sub", "sub/name"),
                        ("prefix-dots", ".."), ("prefix-backslash", "C:\\x"), ("prefix-tab", "a\tb"),
                        ("prefix-long", "x" * 300)]:
        add(6, key, f"python -m mova_model.convert … --prefix {prefix[:40]!r}" + ("…" if len(prefix) > 40 else ""),
            "refused", converter_prefix(prefix))
    add(6, "prefix-japanese", "python -m mova_model.convert … --prefix '歌う猫'", "handled", converter_prefix("歌う猫"))
    for key, name, expect in [("run-long", "r" * 300, "refused"), ("run-up", "../../escape", "refused"),
                              ("run-absolute", "/etc/mova", "refused"), ("run-drive", "C:\\runs\\x", "refused"),
                              ("run-unc", "\\\\server\\share\\x", "refused"), ("run-control", "run\nname", "refused"),
                              ("run-japanese", "歌う猫の練習", "handled"), ("run-sub", "cats/v2", "handled")]:
        add(6, key, f"MOVA Train LoRA run_name {name[:40]!r}" + ("…" if len(name) > 40 else ""), expect,
            run_name(name), cheap=True)
    add(6, "run-file", "MOVA Train LoRA run_name 'mine' where output/mova_training/mine is a file", "refused",
        run_name("mine", file_in_the_way=True), cheap=True)
    for key, name, expect in [("lora-up", "../../x", "refused"), ("lora-absolute", "/tmp/x", "refused"),
                              ("lora-long", "x" * 250, "refused"), ("lora-japanese", "歌う猫/第1版", "handled")]:
        add(6, key, f"MOVA Save LoRA filename {name[:40]!r}" + ("…" if len(name) > 40 else ""), expect,
            lora_name(name), cheap=True)
    add(6, "lora-file-official", "MOVA Save LoRA filename 'taken' where taken_official is a file", "refused",
        lora_name("taken", file_in_the_way=True), cheap=True)
    for key, folder, listed, expect in [("clips-up", "../secrets", False, "refused"),
                                        ("clips-absolute", "/etc", False, "refused"),
                                        ("clips-home", "~/Videos", False, "refused"),
                                        ("clips-inside-up", "clips/../../x", False, "refused"),
                                        ("clips-listed", "<data>/clips", True, "handled"),
                                        ("clips-listed-up", "<data>/../other", True, "refused")]:
        add(6, key, f"MOVA Dataset folder {folder!r}" + (f" ({FOLDERS_ENV} lists <data>)" if listed else ""), expect,
            clip_folder(folder, listed), cheap=True)
    # 7. domains
    text = "Un homme au café dit « bonjour »"
    add(7, "caption-cp1252", "caption file in Windows-1252 (café, « »)", "handled", caption(text.encode("cp1252"), text))
    add(7, "caption-utf16-bom", "caption file in UTF-16 with its byte-order mark", "handled",
        caption(text.encode("utf-16"), text))
    add(7, "caption-utf16-nobom", "caption file in UTF-16 LE without a byte-order mark", "refused",
        caption(text.encode("utf-16-le")))
    add(7, "caption-utf8-bom", "caption file in UTF-8 with a byte-order mark", "handled",
        caption(b"\xef\xbb\xbf" + text.encode("utf-8"), text))
    add(7, "caption-binary", "caption file holding bytes 0x81 0x8d (not text in any usual encoding)", "refused",
        caption(b"a \x81\x8d b"))
    add(7, "dangling-clip", "a clip that is a dangling link, its caption present", "refused", dangling_clip)
    add(7, "audio-int16", "AUDIO with int16 samples [-32768, 0, 16384], numpy int64 sample rate", "handled",
        integer_sound(torch.int16, [-32768, 0, 16384], [-1.0, 0.0, 0.5]), cheap=True)
    add(7, "audio-uint8", "AUDIO with uint8 samples [0, 128, 192]", "handled",
        integer_sound(torch.uint8, [0, 128, 192], [-1.0, 0.0, 0.5]), cheap=True)
    add(7, "audio-int64", "AUDIO with int64 samples", "refused",
        refused_sound({"waveform": torch.zeros(1, 1, 100, dtype=torch.int64), "sample_rate": 300}), cheap=True)
    add(7, "audio-loud-float", "AUDIO with float samples at 16384 (int16 values as floats)", "refused",
        refused_sound({"waveform": torch.full((1, 1, 100), 16384.0), "sample_rate": 300}), cheap=True)
    add(7, "audio-rate-nan", "AUDIO with sample rate NaN", "refused",
        refused_sound({"waveform": torch.zeros(1, 1, 100), "sample_rate": float("nan")}), cheap=True)
    add(7, "video-uint8", "uint8 frames of a real H.264 clip into MOVA Conditioning's video", "handled", eight_bit_video)
    add(7, "sigmas-karras", "Karras Scheduler's SD range (σ 14.6 → 0.03) into the MOVA Guider", "refused",
        sigmas(karras(20, 0.0291675, 14.614642)), cheap=True)
    add(7, "sigmas-negative", "SIGMAS [1, 0.5, -0.25, 0]", "refused", sigmas(torch.tensor([1.0, 0.5, -0.25, 0.0])),
        cheap=True)
    add(7, "sigmas-nan", "SIGMAS [1, NaN, 0]", "refused", sigmas(torch.tensor([1.0, math.nan, 0.0])), cheap=True)
    add(7, "sigmas-rising", "SIGMAS [0, 0.5, 1] (flipped)", "refused", sigmas(torch.tensor([0.0, 0.5, 1.0])),
        cheap=True)
    add(7, "sigmas-mova", "SIGMAS [1, 0.75, 0.4, 0] (a MOVA-range schedule)", "handled",
        sigmas(torch.tensor([1.0, 0.75, 0.4, 0.0])), cheap=True)
    add(7, "extend-crossfade-nan", "MOVA Extend crossfade NaN", "refused", widget(EXTEND, {"crossfade": math.nan}),
        cheap=True)
    add(7, "extend-crossfade-inf", "MOVA Extend crossfade inf", "refused", widget(EXTEND, {"crossfade": math.inf}),
        cheap=True)
    add(7, "extend-fps-nan", "MOVA Extend fps NaN", "refused", widget(EXTEND, {"fps": math.nan}), cheap=True)
    add(7, "lora-strength-nan", "MOVA LoRA Loader strength_high_noise NaN", "refused",
        widget(LORA_LOADER, {"strength_high_noise": math.nan}), cheap=True)
    add(7, "sampler-cfg-nan", "MOVA Sampler cfg NaN", "refused", widget(SAMPLER, {"cfg": math.nan}), cheap=True)
    add(7, "sampler-steps-bool", "MOVA Sampler steps true", "refused", widget(SAMPLER, {"steps": True}), cheap=True)
    add(7, "guider-cfg-negative", "MOVA Guider cfg -3 (ComfyUI skips this range check)", "refused",
        widget(GUIDER, {"cfg": -3.0}), cheap=True)
    add(7, "numpy-numbers", "MOVA Sampler steps numpy.int64(20), cfg numpy.float32(5)", "handled",
        widget(SAMPLER, {"steps": np.int64(20), "cfg": np.float32(5.0)}), cheap=True)
    # 8. workflow files
    add(8, "workflow-as-shipped", "mova_i2va.json as shipped", "handled", workflow(), cheap=True)
    add(8, "widgets-dict", "MOVA Sampler's widgets_values a dict", "refused",
        workflow(values({"seed": 42, "steps": 50})), cheap=True)
    add(8, "widgets-one-too-many", "MOVA Sampler's widgets_values with one value too many at the end", "refused",
        workflow(values([42, "fixed", 50, 5.0, 5.0, 0.9, 7.0])), cheap=True)
    add(8, "widgets-shifted", "MOVA Sampler's widgets_values with an extra value in the middle", "refused",
        workflow(values([42, "fixed", "x", 50, 5.0, 5.0, 0.9])), cheap=True)
    add(8, "widgets-string", "MOVA Sampler's widgets_values a string", "refused", workflow(values("42")), cheap=True)
    add(8, "widgets-wrong-combo", "MOVA Audio VAE Loader's weight_dtype 'fp64'", "refused",
        workflow(lambda flow, s: next(n for n in flow["nodes"] if n["type"] == "MovaAudioVAELoader")
                 ["widgets_values"].__setitem__(1, "fp64")), cheap=True)
    add(8, "widgets-named-unknown", "MOVA Sampler's widgets_values_named with a widget it does not have", "refused",
        workflow(lambda flow, s: s.update(widgets_values_named={"seed": 1, "quality": 5})), cheap=True)
    add(8, "missing-link", "MOVA Sampler's positive input from a link that is not in the workflow", "refused",
        workflow(lambda flow, s: flow.update(links=[link for link in flow["links"] if link[3] != s["id"]])),
        cheap=True)
    add(8, "api-prompt", "an API-format prompt given where a UI workflow belongs", "refused",
        workflow(lambda flow, s: {"12": {"class_type": "MovaSampler", "inputs": {}}}), cheap=True)
    add(8, "node-without-type", "a node without a 'type'", "refused",
        workflow(lambda flow, s: s.pop("type") and None), cheap=True)
    add(8, "link-not-a-list", "a link entry that is a number, not a list", "refused",
        workflow(lambda flow, s: flow["links"].append(7)), cheap=True)
    add(8, "link-short", "the link into MOVA Sampler's first input cut to [id, from node]", "refused",
        workflow(short_link), cheap=True)
    add(8, "node-not-object", "a node that is the number 5", "refused",
        workflow(lambda flow, s: flow["nodes"].append(5)), cheap=True)
    add(8, "node-without-id", "MOVA Sampler without an 'id'", "refused", workflow(lambda flow, s: s.pop("id") and None),
        cheap=True)
    add(8, "input-not-object", "MOVA Sampler's inputs list holding the text 'positive'", "refused",
        workflow(lambda flow, s: s["inputs"].append("positive")), cheap=True)
    return out
