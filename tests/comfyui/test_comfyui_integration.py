"""End to end in a real ComfyUI (COMFYUI_PATH = a ComfyUI checkout; run pytest with ComfyUI's Python): the pack
registers, refuses missing files at queue time, serves its templates, runs the shipped image-to-video workflows
to MP4s (bf16, fp8, the converter's fp8 files in both layouts), stops on Cancel, keeps experts loaded between
queues, and its latents pass through core's latent nodes. The server, its base folder and the helpers are in
tests/support/comfy_integration.py; the other test_comfyui_*.py files cover LoRAs, prompts, training, the conditioning
modes and the native sampling path.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from comfy_integration import (CONVERTED, FP8_LAYOUTS, FPS, FRAMES, HEIGHT, INTEGRATION, STEPS, WIDTH, api_prompt,
                               cancel_during, check_mp4, log_after, node_key, refusal, run_prompt, saved_latent)
from comfy_server import COMFYUI, PACK, SCRIPTS, free_port
from comfyui_mova.nodes.catalog import ALL_NODES

pytestmark = INTEGRATION


def test_all_nodes_register(client, base):
    info = client.object_info()
    for node in ALL_NODES:
        assert node.node_id in info, f"{node.node_id} missing; server log:\n{(base / 'server.log').read_text()[-3000:]}"
        entry = info[node.node_id]
        assert entry["category"] == "MOVA" and entry["display_name"] == node.display_name
        order = entry["input_order"]["required"] + entry["input_order"].get("optional", [])
        assert order == [i.name for i in node.inputs]
        for item in node.inputs:
            section = "optional" if getattr(item, "optional", False) else "required"
            assert entry["input"][section][item.name][1]["tooltip"] == item.tooltip
        assert entry["output"] == [o.type for o in node.outputs]
    from workflow_api import combo_options
    lists = {(node, name): combo_options(*info[node]["input"]["required"][name]) for node, name in (
        ("MovaVideoExpertLoader", "model_name"), ("MovaAudioTowerLoader", "audio_dit_name"),
        ("MovaAudioTowerLoader", "bridge_name"), ("MovaAudioVAELoader", "vae_name"))}
    # each loader lists only what it loads: the release folders and the converter's files of its kind
    converted = {layout: f"converted_{layout}/mova_tiny" for layout in FP8_LAYOUTS}
    assert lists["MovaVideoExpertLoader", "model_name"] == sorted(
        ["MOVA-360p/video_dit", "MOVA-360p/video_dit_2"]
        + [f"{c}_video_dit_{e}_fp8_e4m3fn_scaled.safetensors" for c in converted.values() for e in ("high", "low")])
    assert lists["MovaAudioTowerLoader", "audio_dit_name"] == sorted(
        ["MOVA-360p/audio_dit"] + [f"{c}_audio_dit_fp8_e4m3fn_scaled.safetensors" for c in converted.values()])
    assert lists["MovaAudioTowerLoader", "bridge_name"] == sorted(
        ["MOVA-360p/dual_tower_bridge"]
        + [f"{c}_dual_tower_bridge_fp8_e4m3fn_scaled.safetensors" for c in converted.values()])
    assert lists["MovaAudioVAELoader", "vae_name"] == ["MOVA-360p/audio_vae"]  # not the Wan VAE beside it


def test_missing_and_wrong_files_are_named_at_queue_time(client, base):
    """Every missing or wrong MOVA file at once, each on its loader, with the folder and the fix; nothing runs."""
    name = client.upload_image(base / "input" / "start.png")
    prompt = api_prompt(client, "mova_i2va_lora.json", seed=13, image_name=name)
    keys = {}
    for key, node in prompt.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "MovaVideoExpertLoader":
            high = inputs["model_name"] == "MOVA-360p/video_dit"
            inputs["model_name"] = "MOVA-720p/video_dit" if high else "MOVA-360p/audio_dit"
            keys["high" if high else "low"] = key
        elif kind == "MovaAudioTowerLoader":
            inputs["bridge_name"], keys["tower"] = "MOVA-360p/video_dit", key
        elif kind == "MovaAudioVAELoader":
            inputs["vae_name"], keys["vae"] = "wan_2.1_vae.safetensors", key
        elif kind == "MovaLoraLoader":
            inputs["lora_name"], keys["lora"] = "gone.safetensors", key
    log_before = (base / "server.log").read_text()
    errors = refusal(client, prompt)
    assert set(keys.values()) <= set(errors), errors
    assert any("'MOVA-720p/video_dit' is not in models/diffusion_models" in e and
               'hf download OpenMOSS-Team/MOVA-720p --include "video_dit/*"' in e for e in errors[keys["high"]])
    assert any("'MOVA-360p/audio_dit' in models/diffusion_models holds the MOVA audio DiT" in e
               for e in errors[keys["low"]])
    assert any("bridge_name: 'MOVA-360p/video_dit' in models/diffusion_models holds a MOVA video expert" in e
               for e in errors[keys["tower"]])
    assert any("'wan_2.1_vae.safetensors' in models/vae holds a Wan video VAE" in e for e in errors[keys["vae"]])
    assert any("'gone.safetensors' is not in models/loras" in e for e in errors[keys["lora"]])
    assert "loaded with" not in (base / "server.log").read_text()[len(log_before):]  # nothing was loaded


def test_a_file_name_outside_the_model_folders_is_refused(client, base):
    """The loaders check their own file inputs, so ComfyUI does not hold a workflow's value to its list: a name
    going up out of models/diffusion_models and an absolute path, each to a real MOVA file, are refused at queue
    time by their shape; nothing is loaded."""
    name = client.upload_image(base / "input" / "start.png")
    prompt = api_prompt(client, "mova_i2va.json", seed=14, image_name=name)
    high = next(k for k, n in prompt.items() if n["class_type"] == "MovaVideoExpertLoader"
                and n["inputs"]["model_name"] == "MOVA-360p/video_dit")
    vae = node_key(prompt, "MovaAudioVAELoader")
    up = "../../models/diffusion_models/MOVA-360p/video_dit"  # exists, seen from models/diffusion_models
    absolute = str(base / "models" / "vae" / prompt[vae]["inputs"]["vae_name"])
    assert (base / "models" / "diffusion_models" / up).is_dir() and Path(absolute).exists()
    prompt[high]["inputs"]["model_name"], prompt[vae]["inputs"]["vae_name"] = up, absolute
    log_before = (base / "server.log").read_text()
    errors = refusal(client, prompt)
    assert any(f"'{up}' goes up out of the folder ('..')" in e for e in errors[high]), errors
    assert any(f"'{absolute}' is an absolute path" in e for e in errors[vae]), errors
    assert "loaded with" not in (base / "server.log").read_text()[len(log_before):]


def test_workflows_served_as_templates(client):
    """ComfyUI's template browser lists the shipped workflows under the pack and serves them unchanged."""
    shipped = sorted(p.stem for p in (PACK / "example_workflows").glob("*.json"))
    assert "mova_i2va" in shipped and sorted(client.get_json("/workflow_templates")["comfyui-mova"]) == shipped
    served = client.get_json("/api/workflow_templates/comfyui-mova/mova_i2va.json")
    assert served == json.loads((PACK / "example_workflows" / "mova_i2va.json").read_text())


def test_cli_refuses_missing_text_encoder(server, base, tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPTS / "run_workflow.py"), "--server", server, "--image",
                          str(tmp_path / "none.png"), "--output", str(tmp_path / "x.mp4")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--image" in run.stderr and "does not exist" in run.stderr
    run = subprocess.run([sys.executable, str(SCRIPTS / "run_workflow.py"), "--server", server, "--image",
                          str(base / "input" / "start.png"), "--output", str(tmp_path / "x.mp4")],
                         capture_output=True, text=True)
    assert run.returncode == 3, run.stderr
    assert "umt5_xxl_fp8_e4m3fn_scaled.safetensors" in run.stderr and "models/text_encoders" in run.stderr
    assert "MOVA-360p" not in run.stderr  # the MOVA files are all there


def test_cli_server_down(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPTS / "run_workflow.py"), "--server",
                          f"http://127.0.0.1:{free_port()}", "--prompt", "x", "--output", str(tmp_path / "x.mp4")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "cannot reach ComfyUI" in run.stderr and "start it first" in run.stderr


def test_i2va_workflow_end_to_end(client, base, tmp_path):
    name = client.upload_image(base / "input" / "start.png")
    prompt, outputs = api_prompt(client, "mova_i2va.json", seed=3, image_name=name), {}
    videos, progress = run_prompt(client, prompt, outputs)
    sampler = node_key(prompt, "MovaSampler")
    release = base / "models" / "diffusion_models" / "MOVA-360p"
    assert outputs[sampler]["text"][0] == ("shift 5, boundary_ratio 0.9 (widgets); sigma_min 0, extra_one_step true "
                                           f"(release {release})")
    assert "MOVA Sampler: shift 5, boundary_ratio 0.9 (widgets)" in (base / "server.log").read_text()
    assert len(videos) == 1
    sampler_steps = [value for kind, value in progress if kind == "MovaSampler"]
    assert sampler_steps[-1] == STEPS and sampler_steps == sorted(sampler_steps)
    target = client.download(videos[0], tmp_path / "i2va.mp4")
    check_mp4(target)
    assert (base / "output" / videos[0]["subfolder"] / videos[0]["filename"]).is_file()


def test_t2va_workflow_end_to_end(client, tmp_path):
    videos, _ = run_prompt(client, api_prompt(client, "mova_t2va.json", seed=4))
    check_mp4(client.download(videos[0], tmp_path / "t2va.mp4"))


def test_wrong_wiring_reaches_the_user(client):
    """Experts swapped: the run stops with the node's message (what to change), not a stack of shapes."""
    from comfy_client import ServerError
    prompt = api_prompt(client, "mova_t2va.json", seed=5)
    sampler = next(n for n in prompt.values() if n["class_type"] == "MovaSampler")
    inputs = sampler["inputs"]
    inputs["high_noise_expert"], inputs["low_noise_expert"] = inputs["low_noise_expert"], inputs["high_noise_expert"]
    with pytest.raises(ServerError, match="high_noise_expert got the low-noise expert.*swap"):
        run_prompt(client, prompt)


def test_fp8_weights_run(client, tmp_path):
    """weight_dtype fp8_e4m3fn on every MOVA loader: built with ComfyUI's scaled-fp8 layers, runs to an MP4."""
    prompt = api_prompt(client, "mova_t2va.json", seed=6)
    for node in prompt.values():
        if node["class_type"] in ("MovaVideoExpertLoader", "MovaAudioTowerLoader"):
            node["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    videos, progress = run_prompt(client, prompt)
    assert [v for k, v in progress if k == "MovaSampler"][-1] == STEPS
    check_mp4(client.download(videos[0], tmp_path / "fp8.mp4"))


def test_cancel_stops_the_sampler(client):
    """Cancel (POST /interrupt) during sampling stops the MOVA Sampler between steps."""
    prompt = api_prompt(client, "mova_t2va.json", seed=7)
    next(n for n in prompt.values() if n["class_type"] == "MovaSampler")["inputs"]["steps"] = 1000
    prompt_id = cancel_during(client, prompt, lambda data: prompt.get(data.get("node"), {}).get("class_type") ==
                               "MovaSampler", "no progress from the sampler")
    deadline = time.monotonic() + 60
    while not client.history(prompt_id) and time.monotonic() < deadline:  # filed just after the last message
        time.sleep(0.2)
    status = client.history(prompt_id).get("status", {})
    assert status and not status.get("completed")
    assert any(event[0] == "execution_interrupted" for event in status.get("messages", []))


def test_same_file_loaded_once(client, tmp_path):
    """Two loader nodes with the same file and settings: ComfyUI's cache runs one, the other reuses it."""
    prompt = api_prompt(client, "mova_t2va.json", seed=8)
    loader_key = node_key(prompt, "MovaAudioVAELoader")
    prompt[loader_key]["inputs"]["weight_dtype"] = "fp16"  # settings no earlier test used: nothing cached yet
    prompt["9001"] = json.loads(json.dumps(prompt[loader_key]))
    decoder = next(n for n in prompt.values() if n["class_type"] == "MovaAudioDecode")
    decoder["inputs"]["audio_vae"] = ["9001", 0]
    ws = client.websocket()
    executed = []
    receive = ws.receive

    def spy(timeout=None):
        message = receive(timeout)
        if message and message.get("type") == "executing" and message["data"].get("node") in (loader_key, "9001"):
            executed.append(message["data"]["node"])
        return message

    ws.receive = spy
    try:
        from run_workflow import wait
        wait(client, ws, client.queue(prompt), prompt, timeout=600)
    finally:
        ws.close()
    assert len(executed) == 1, executed


def test_dual_cfg_workflow_with_step_caching(client, base, tmp_path):
    """The shipped dual-CFG workflow runs; with step caching on, the sampler says how many steps it skipped."""
    name = client.upload_image(base / "input" / "start.png")
    prompt = api_prompt(client, "mova_i2va_dual_cfg.json", seed=11, image_name=name)
    outputs = {}
    videos, _ = run_prompt(client, prompt, outputs)
    check_mp4(client.download(videos[0], tmp_path / "dual.mp4"))
    sampler = node_key(prompt, "MovaSampler")
    assert "step caching" not in outputs[sampler]["text"][0]  # no caching, nothing to report on it
    next(n for n in prompt.values() if n["class_type"] == "MovaSamplerOptions")["inputs"]["cache_threshold"] = 0.5
    prompt[sampler]["inputs"]["steps"] = 10
    run_prompt(client, prompt, outputs)
    assert re.fullmatch(r"step caching skipped [1-9] of 10 steps \(\d+%\)", outputs[sampler]["text"][0].split("\n")[-1])
    assert "MOVA Sampler: step caching skipped" in (base / "server.log").read_text()


def test_speed_options_inside_comfyui(client, base, tmp_path):
    """ComfyUI's own attention and compiled blocks run the dual-CFG workflow to an MP4; a GPU-only attention
    kernel is refused at queue time on this CPU server, on the options node, with the fix."""
    from comfy_client import ServerError
    name = client.upload_image(base / "input" / "start.png")
    prompt = api_prompt(client, "mova_i2va_dual_cfg.json", seed=12, image_name=name)
    options = next(n for n in prompt.values() if n["class_type"] == "MovaSamplerOptions")["inputs"]
    options.update(attention="comfy", compile="blocks")
    videos, _ = run_prompt(client, prompt)
    check_mp4(client.download(videos[0], tmp_path / "speed.mp4"))
    log = (base / "server.log").read_text()
    assert re.search(r"MOVA Sampler: attention comfy; \d+ blocks compiled \(blocks\)", log)
    options.update(attention="sdpa_cudnn", compile="off")
    with pytest.raises(ServerError, match="refused the workflow.*attention: attention backend 'sdpa_cudnn' runs on "
                       "CUDA GPUs only.*choose 'auto' or 'sdpa'"):
        client.queue(prompt)


def _has_fp8_layers(kind: str) -> bool:
    """Whether this ComfyUI's comfy.ops has ``kind`` (feature, read from its source: no version numbers)."""
    return f"def {kind}(" in (Path(COMFYUI) / "comfy" / "ops.py").read_text()


@pytest.mark.parametrize("layout", FP8_LAYOUTS)
def test_converted_fp8_files_run(client, base, tmp_path, layout):
    """The converter's fp8 files, in either key layout, load through the nodes as stored and run to an MP4 with the
    running ComfyUI's own fp8 layers (mixed_precision_ops where it has them, else scaled_fp8_ops); the log names
    the layers and the patcher class each loader used."""
    start = len((base / "server.log").read_text())
    prompt = api_prompt(client, "mova_t2va.json", seed=12)
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, str) and value in CONVERTED:
                node["inputs"][name] = f"converted_{layout}/mova_tiny_{CONVERTED[value]}_fp8_e4m3fn_scaled.safetensors"
    videos, _ = run_prompt(client, prompt)
    check_mp4(client.download(videos[0], tmp_path / f"{layout}.mp4"))
    family = "mixed_precision_ops" if _has_fp8_layers("mixed_precision_ops") else "scaled_fp8_ops"
    log = log_after(base, start)
    for loader, stem in (("Video Expert", "video_dit_high"), ("Video Expert", "video_dit_low"),
                         ("Audio Tower", "audio_dit")):
        assert re.search(rf"MOVA {loader} Loader: \S*converted_{layout}/mova_tiny_{stem}_fp8_e4m3fn_scaled"
                         rf"\.safetensors.* loaded with comfy\.ops\.{family} .*, patcher comfy\.model_patcher\.\w+",
                         log), \
            log[-3000:]


def test_experts_stay_loaded_between_queues(client, base):
    """Both experts fit beside each other (always so on the CPU): the next queue finds them loaded, so ComfyUI
    loads no expert again."""
    run_prompt(client, api_prompt(client, "mova_t2va.json", seed=14))
    start = len((base / "server.log").read_text())
    run_prompt(client, api_prompt(client, "mova_t2va.json", seed=15))
    log = log_after(base, start)
    assert "MOVA Sampler: both video experts stay loaded" in log
    assert "Requested to load WanDiT" not in log, log[-3000:]


def test_video_latent_through_stock_latent_nodes(client, base):
    """The MOVA Sampler's video LATENT is a plain Wan 2.1 latent for core's latent nodes: Latent Cut along time,
    Replace Video Latent Frames (where this ComfyUI has it), Save Latent, and VAE Decode of the result."""
    info = client.object_info()
    prompt = api_prompt(client, "mova_t2va.json", seed=13)
    sampler = node_key(prompt, "MovaSampler")
    vae = node_key(prompt, "VAELoader")

    def node(kind, **inputs):
        return {"class_type": kind, "inputs": inputs}

    prompt |= {
        "40": node("SaveLatent", samples=[sampler, 0], filename_prefix="latents/mova_full"),
        "41": node("LatentCut", samples=[sampler, 0], dim="t", index=1, amount=3),
        "42": node("SaveLatent", samples=["41", 0], filename_prefix="latents/mova_cut"),
        "43": node("VAEDecode", samples=["41", 0], vae=[vae, 0]),
        "44": node("PreviewImage", images=["43", 0]),
    }
    replace = "ReplaceVideoLatentFrames" in info
    if replace:
        prompt |= {"45": node("LatentCut", samples=[sampler, 0], dim="t", index=0, amount=1),
                   "46": node("ReplaceVideoLatentFrames", destination=[sampler, 0], source=["45", 0], index=2),
                   "47": node("SaveLatent", samples=["46", 0], filename_prefix="latents/mova_replaced")}
    outputs = {}
    run_prompt(client, prompt, outputs)
    from comfyui_mova.mova_model.sampling.sizes import VAE_TIME, latent_shapes
    from tiny_release import DAC_16K
    full, cut = saved_latent(base, outputs, "40"), saved_latent(base, outputs, "42")
    assert tuple(full.shape) == latent_shapes(1, HEIGHT, WIDTH, FRAMES, FPS, DAC_16K, DAC_16K.latent_dim).video
    assert torch.equal(cut, full[:, :, 1:4])
    assert len(outputs["44"]["images"]) == 1 + VAE_TIME * (cut.shape[2] - 1)  # VAE Decode of 3 latent frames
    if replace:
        replaced = saved_latent(base, outputs, "47")
        assert torch.equal(replaced[:, :, 2], full[:, :, 0])
        assert torch.equal(replaced[:, :, :2], full[:, :, :2]) and torch.equal(replaced[:, :, 3:], full[:, :, 3:])
