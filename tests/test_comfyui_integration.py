"""End to end in a real ComfyUI (COMFYUI_PATH = a ComfyUI checkout; run pytest with ComfyUI's Python).

Starts ``main.py --cpu`` on 127.0.0.1 with a temporary base directory holding this pack, tiny random models
written here (a MOVA release, a random full-size Wan 2.1 VAE in ComfyUI's format, MOVA LoRAs), test-only nodes:
a real ComfyUI CLIP at toy size with UMT5-XXL's tokenizer and model settings in place of Load CLIP (UMT5-XXL has
no tiny form ComfyUI can load; tests/comfy_text_nodes.py) and probes (tests/comfy_fixtures.py),
then runs the shipped workflows through the headless client and checks the MP4s, and checks ComfyUI's
application of MOVA LoRA patches weight by weight.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from comfy_fixtures import (CONCAT_PROBE_NODE, LATENT_PROBE_NODE, PROBE_NODE, PROBED, STRENGTHS, VIDEO_FRAMES,
                            VIDEO_SIZE, fitted_speech, lora_delta, lora_node, loaders, original, probe_node, probed,
                            probed_latents, read_audio, write_mode_media, write_test_loras)
from comfy_server import COMFYUI, PACK, SCRIPTS, comfy_server, free_port, new_base, write_wan_vae
from comfyui_mova.nodes import spec
from fake_llm_server import TEXT_MODEL, VISION_MODEL, FakeLLMServer, caption_for

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI, reason="COMFYUI_PATH is not set (point it at a ComfyUI checkout to run "
                       "the integration tests, with ComfyUI's Python)"),
]

WIDTH, HEIGHT, FRAMES, FPS, STEPS = 32, 32, 25, 24.0, 4
# The ComfyUI server gets this key in its environment, for MOVA Prompt Enhance's api_key_env.
LLM_KEY_ENV, LLM_KEY = "MOVA_TEST_LLM_KEY", "sk-test-Zq8Xw2Lm4Np6Rt0Vb1Yc3Hd5"
FP8_LAYOUTS = ("comfy_quant", "scaled_fp8")
CONVERTED = {"MOVA-360p/video_dit": "video_dit_high", "MOVA-360p/video_dit_2": "video_dit_low",
             "MOVA-360p/audio_dit": "audio_dit", "MOVA-360p/dual_tower_bridge": "dual_tower_bridge"}
TRAIN_FRAMES = 9


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """ComfyUI base directory: the pack, the test text node, tiny models, a start image."""
    from PIL import Image
    from tiny_release import write_release

    root = new_base(tmp_path_factory.mktemp("comfy_base"))
    (root / "custom_nodes" / "test_text_nodes.py").write_text((Path(__file__).parent / "comfy_text_nodes.py").read_text())
    (root / "custom_nodes" / "test_weight_probe.py").write_text(PROBE_NODE)
    (root / "custom_nodes" / "test_concat_probe.py").write_text(CONCAT_PROBE_NODE)
    (root / "custom_nodes" / "test_latent_probe.py").write_text(LATENT_PROBE_NODE)
    models = root / "models"
    write_release(models / "diffusion_models" / "MOVA-360p",
                  ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"))
    write_release(models / "vae" / "MOVA-360p", ("audio_vae",))
    write_wan_vae(models / "vae" / "wan_2.1_vae.safetensors")
    write_test_loras(models / "loras")
    release = models / "diffusion_models" / "MOVA-360p"
    for layout in FP8_LAYOUTS:  # the converter's fp8 files in both key layouts
        subprocess.run([sys.executable, "-m", "mova_model.convert", str(release), str(models / "diffusion_models" /
                        f"converted_{layout}"), "--prefix", "mova_tiny", "--components", "high", "low", "audio_dit",
                        "bridge", "--fp8-layout", layout], cwd=PACK, check=True, capture_output=True)
    Image.new("RGB", (48, 40), (200, 120, 40)).save(root / "input" / "start.png")
    from clip_files import write_clip
    for i in range(2):  # training clips: real H.264 + AAC files, a little larger and longer than needed
        write_clip(root / "input" / "mova_clips" / f"clip{i}.mp4", TRAIN_FRAMES + 3, FPS, WIDTH + 16, HEIGHT + 8,
                   sample_rate=16000, tone=330.0 * (i + 1), seed=i, caption=f"clip {i}. The audio shows a tone.")
    write_mode_media(root / "input")
    return root


@pytest.fixture(scope="module")
def server(base):
    """A ComfyUI server on a free port (stopped after the module); yields its URL."""
    with comfy_server(base, env={LLM_KEY_ENV: LLM_KEY}) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    from comfy_client import ComfyClient
    return ComfyClient(server, timeout=120)


def test_all_nodes_register(client, base):
    info = client.object_info()
    for node in spec.ALL_NODES:
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


def _refusal(client, prompt) -> dict:
    """POST /prompt expecting a refusal: {node id: [error details]}."""
    import urllib.error
    import urllib.request
    request = urllib.request.Request(client.base + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    answer = json.loads(refused.value.read())
    return {key: [e["details"] for e in entry["errors"]] for key, entry in answer["node_errors"].items()}


def test_missing_and_wrong_files_are_named_at_queue_time(client, base):
    """Every missing or wrong MOVA file at once, each on its loader, with the folder and the fix; nothing runs."""
    name = client.upload_image(base / "input" / "start.png")
    prompt = _prompt(client, "mova_i2va_lora.json", seed=13, image_name=name)
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
    errors = _refusal(client, prompt)
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


def test_workflows_served_as_templates(client):
    """ComfyUI's template browser lists the shipped workflows under the pack and serves them unchanged."""
    assert sorted(client.get_json("/workflow_templates")["comfyui-mova"]) == \
        ["mova_a2v", "mova_extend", "mova_flf2va", "mova_i2va", "mova_i2va_dual_cfg", "mova_i2va_enhanced",
         "mova_i2va_lora", "mova_i2va_native", "mova_t2va", "mova_train_lora", "mova_v2a"]
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


def _prompt(client, workflow: str, **params):
    """The shipped workflow as an API prompt, with the tiny real CLIP in place of Load CLIP (UMT5-XXL): its
    MOVA Text Encode nodes run as they are."""
    from workflow_api import missing_models, set_parameters, ui_to_api
    info = client.object_info()
    prompt = ui_to_api(json.loads((PACK / "example_workflows" / workflow).read_text()), info)
    set_parameters(prompt, width=WIDTH, height=HEIGHT, frames=FRAMES, steps=STEPS, **params)
    for node in prompt.values():
        if node["class_type"] == "CLIPLoader":
            node["class_type"], node["inputs"] = "TestTinyUMT5Loader", {"kind": "umt5xxl"}
    assert sum(n["class_type"] == "MovaTextEncode" for n in prompt.values()) >= 2
    assert missing_models(prompt, info) == []
    return prompt


def _run(client, prompt, outputs: dict | None = None, previews: list | None = None):
    """(SaveVideo files, sampler progress) of one prompt run; ``outputs`` receives every node's UI output,
    ``previews`` the binary preview messages."""
    from run_workflow import finished_history, wait
    from workflow_api import video_outputs
    ws = client.websocket()
    if previews is not None:
        ws.on_binary = previews.append
    progress = []
    receive = ws.receive

    def spy(timeout=None):
        message = receive(timeout)
        if message and message.get("type") == "progress":
            progress.append((prompt.get(message["data"]["node"], {}).get("class_type"), message["data"]["value"]))
        return message

    ws.receive = spy
    try:
        prompt_id = client.queue(prompt)
        wait(client, ws, prompt_id, prompt, timeout=600)
    finally:
        ws.close()
    history = finished_history(client, prompt_id)
    if outputs is not None:
        outputs.update(history.get("outputs", {}))
    return video_outputs(history, prompt), progress


def _check_mp4(path: Path, frames_wanted: int = FRAMES, size: tuple[int, int] = (WIDTH, HEIGHT)) -> tuple[int, int]:
    """Checks an MP4's frames, size, rate and sound length; returns (frames, audio samples) it holds."""
    import av
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames = [f for f in container.decode(video=0)]
        assert len(frames) == frames_wanted and (frames[0].width, frames[0].height) == size
        assert video.average_rate == Fraction(int(FPS))
        # our AUDIO is mono; ComfyUI's muxer may store it as a stereo AAC track
        assert audio.codec_context.sample_rate == 16000 and audio.channels in (1, 2)
    with av.open(str(path)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    expected = int(16000 * frames_wanted / FPS)
    # AAC encodes whole 1024-sample frames: the track holds the audio, padded to at most one more frame.
    assert expected <= samples <= expected + 1024 + 1024, (samples, expected)
    duration = samples / 16000
    assert abs(duration - frames_wanted / FPS) < 0.15
    return len(frames), samples


def test_i2va_workflow_end_to_end(client, base, tmp_path):
    name = client.upload_image(base / "input" / "start.png")
    prompt, outputs = _prompt(client, "mova_i2va.json", seed=3, image_name=name), {}
    videos, progress = _run(client, prompt, outputs)
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "MovaSampler")
    release = base / "models" / "diffusion_models" / "MOVA-360p"
    assert outputs[sampler]["text"][0] == ("shift 5, boundary_ratio 0.9 (widgets); sigma_min 0, extra_one_step true "
                                           f"(release {release})")
    assert "MOVA Sampler: shift 5, boundary_ratio 0.9 (widgets)" in (base / "server.log").read_text()
    assert len(videos) == 1
    sampler_steps = [value for kind, value in progress if kind == "MovaSampler"]
    assert sampler_steps[-1] == STEPS and sampler_steps == sorted(sampler_steps)
    target = client.download(videos[0], tmp_path / "i2va.mp4")
    _check_mp4(target)
    assert (base / "output" / videos[0]["subfolder"] / videos[0]["filename"]).is_file()


def test_t2va_workflow_end_to_end(client, tmp_path):
    videos, _ = _run(client, _prompt(client, "mova_t2va.json", seed=4))
    _check_mp4(client.download(videos[0], tmp_path / "t2va.mp4"))


def test_wrong_wiring_reaches_the_user(client):
    """Experts swapped: the run stops with the node's message (what to change), not a stack of shapes."""
    from comfy_client import ServerError
    prompt = _prompt(client, "mova_t2va.json", seed=5)
    sampler = next(n for n in prompt.values() if n["class_type"] == "MovaSampler")
    inputs = sampler["inputs"]
    inputs["high_noise_expert"], inputs["low_noise_expert"] = inputs["low_noise_expert"], inputs["high_noise_expert"]
    with pytest.raises(ServerError, match="high_noise_expert got the low-noise expert.*swap"):
        _run(client, prompt)


def test_fp8_weights_run(client, tmp_path):
    """weight_dtype fp8_e4m3fn on every MOVA loader: built with ComfyUI's scaled-fp8 layers, runs to an MP4."""
    prompt = _prompt(client, "mova_t2va.json", seed=6)
    for node in prompt.values():
        if node["class_type"] in ("MovaVideoExpertLoader", "MovaAudioTowerLoader"):
            node["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    videos, progress = _run(client, prompt)
    assert [v for k, v in progress if k == "MovaSampler"][-1] == STEPS
    _check_mp4(client.download(videos[0], tmp_path / "fp8.mp4"))


def _cancel_during(client, prompt: dict, is_running, silent: str, timeout: float = 120) -> str:
    """Queue ``prompt``, cancel it at the first progress message for which ``is_running(data)`` holds (``silent``:
    the failure when none comes), and check ComfyUI reports it cancelled; returns the prompt id."""
    from comfy_client import ServerError
    from run_workflow import wait
    ws = client.websocket()
    try:
        prompt_id = client.queue(prompt)
        while True:
            message = ws.receive(timeout=timeout)
            assert message is not None, silent
            if message["type"] == "progress" and is_running(message.get("data", {})):
                break
        client.cancel(prompt_id)
        with pytest.raises(ServerError, match="cancelled"):
            wait(client, ws, prompt_id, prompt, timeout=120)
    finally:
        ws.close()
    return prompt_id


def test_cancel_stops_the_sampler(client):
    """Cancel (POST /interrupt) during sampling stops the MOVA Sampler between steps."""
    prompt = _prompt(client, "mova_t2va.json", seed=7)
    next(n for n in prompt.values() if n["class_type"] == "MovaSampler")["inputs"]["steps"] = 1000
    prompt_id = _cancel_during(client, prompt, lambda data: prompt.get(data.get("node"), {}).get("class_type") ==
                               "MovaSampler", "no progress from the sampler")
    deadline = time.monotonic() + 60
    while not client.history(prompt_id) and time.monotonic() < deadline:  # filed just after the last message
        time.sleep(0.2)
    status = client.history(prompt_id).get("status", {})
    assert status and not status.get("completed")
    assert any(event[0] == "execution_interrupted" for event in status.get("messages", []))


def test_same_file_loaded_once(client, tmp_path):
    """Two loader nodes with the same file and settings: ComfyUI's cache runs one, the other reuses it."""
    prompt = _prompt(client, "mova_t2va.json", seed=8)
    loader_key = next(k for k, n in prompt.items() if n["class_type"] == "MovaAudioVAELoader")
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


def test_lora_patches_stack_and_come_off(client, base, tmp_path):
    """A LoRA at strength s: W + s·(alpha/rank)·B·A on each part's weights (ComfyUI applying the patches);
    a second loader stacks; the loaders' own outputs keep the exact original weights."""
    factors = write_test_loras(tmp_path / "loras")  # the same seeded files the server has
    first = dict(zip(STRENGTHS, (0.5, 1.5, -1.0, 2.0)))
    second = dict(zip(STRENGTHS, (0.75, 1.0, 1.0, 1.0)))
    prompt = loaders() | {
        "10": lora_node(None, "my_mova_lora/lora_weights.pt", first),
        "11": lora_node("10", "second.safetensors", second),
        "20": probe_node(["10", 0], ["10", 2]), "21": probe_node(["10", 1], ["10", 2]),
        "22": probe_node(["11", 0], ["11", 2]),
    }
    outputs = {}
    _run(client, prompt, outputs)
    one = [("my_mova_lora/lora_weights.pt", first)]
    both = one + [("second.safetensors", second)]
    models = base / "models"
    for node, expert, applied in (("20", "video_dit", one), ("21", "video_dit_2", one), ("22", "video_dit", both)):
        for entry, (dtype, values) in probed(outputs, node).items():
            w = original(models, entry, expert)
            delta = lora_delta(factors, applied, entry, expert)
            assert dtype == "torch.float32"
            assert torch.allclose(values, w + delta, atol=1e-5), (node, entry)
    assert not torch.equal(probed(outputs, "22")["expert:blocks.0.self_attn.q.weight"][1],
                           probed(outputs, "20")["expert:blocks.0.self_attn.q.weight"][1])
    assert outputs["10"]["text"][0].startswith(
        "my_mova_lora/lora_weights.pt: high-noise expert 2 weights at 0.5, low-noise expert 1 weights at 1.5, "
        "audio DiT 1 weights at -1, bridge 1 weights at 2")
    # unplugged: the loaders' outputs, after the patched clones ran, hold the file's weights exactly
    outputs = {}
    _run(client, loaders() | {"30": probe_node(["1", 0], ["3", 0]), "31": probe_node(["2", 0], ["3", 0])}, outputs)
    for node, expert in (("30", "video_dit"), ("31", "video_dit_2")):
        for entry, (_, values) in probed(outputs, node).items():
            assert torch.equal(values, original(models, entry, expert)), (node, entry)


def test_lora_on_fp8_weights(client, base, tmp_path):
    """fp8 experts: ComfyUI dequantises, adds the LoRA and requantises (stays fp8): W + s·(α/r)·B·A within fp8
    rounding. scaled_fp8 layers (ComfyUI up to v0.3.x) keep the weight's own scale, so the range cannot grow
    (|W'| <= max|W|); comfy_quant layers (v0.8.0+) take a new scale from the patched weight, so its largest value
    is kept within fp8 rounding (README says both). Unplugging is exact."""
    factors = write_test_loras(tmp_path / "loras")
    strengths = dict.fromkeys(STRENGTHS, 0.5)  # a small update, as real LoRAs make: little is clipped
    plain = loaders("fp8_e4m3fn") | {"30": probe_node(["1", 0], ["3", 0])}
    before, patched, after = {}, {}, {}
    _run(client, plain, before)
    _run(client, loaders("fp8_e4m3fn") | {"10": lora_node(None, "my_mova_lora/lora_weights.pt", strengths),
                                          "20": probe_node(["10", 0], ["10", 2])}, patched)
    _run(client, plain, after)
    applied = [("my_mova_lora/lora_weights.pt", strengths)]
    for entry, (dtype, w0, layout) in probed(before, "30", layout=True).items():
        dtype1, w1, layout1 = probed(patched, "20", layout=True)[entry]
        assert dtype == dtype1 == "torch.float8_e4m3fn" and layout == layout1, entry
        delta = lora_delta(factors, applied, entry, "video_dit")
        want = w0 + delta
        if delta.abs().max() > 0:
            assert (w1 - want).norm() < 0.1 * want.norm(), entry  # fp8 rounding
            assert torch.cosine_similarity(w1 - w0, delta, dim=0) > 0.8, entry  # the change is the LoRA
        if layout == "scaled_fp8":
            assert w1.abs().max() <= w0.abs().max(), entry
        else:  # a new per-tensor scale: the largest value survives within an fp8 step (3 mantissa bits)
            assert abs(w1.abs().max() - want.abs().max()) <= want.abs().max() * 2 ** -3, entry
        assert torch.equal(probed(after, "30")[entry][1], w0), entry


def test_lora_problems_reach_the_user(client, base):
    """Keys that do not fit are named on the node and in the log; a LoRA fitting nothing stops the run."""
    from comfy_client import ServerError
    outputs = {}
    prompt = loaders() | {"10": lora_node(None, "partial.safetensors", dict.fromkeys(STRENGTHS, 1.0)),
                          "20": probe_node(["10", 0], ["10", 2])}
    _run(client, prompt, outputs)
    text = outputs["10"]["text"][0]
    assert "high-noise expert 1 weights at 1" in text
    assert "1 LoRA weights do not fit this model and were skipped: video_dit.blocks.9.self_attn.q.weight" in text
    assert "1 keys are not MOVA LoRA weights and were skipped: vae.decoder.conv_in.lora_A.weight" in text
    assert "MOVA LoRA partial.safetensors: 1 keys do not fit" in (base / "server.log").read_text()
    prompt["10"]["inputs"]["lora_name"] = "mova_720p.safetensors"
    with pytest.raises(ServerError, match="fits none of the loaded MOVA weights.*trained on this MOVA release"):
        _run(client, prompt)


def test_lora_workflow_end_to_end(client, base, tmp_path):
    name = client.upload_image(base / "input" / "start.png")
    prompt = _prompt(client, "mova_i2va_lora.json", seed=10, image_name=name)
    outputs = {}
    videos, _ = _run(client, prompt, outputs)
    _check_mp4(client.download(videos[0], tmp_path / "lora.mp4"))
    key = next(k for k, n in prompt.items() if n["class_type"] == "MovaLoraLoader")
    assert outputs[key]["text"][0].startswith("my_mova_lora/lora_weights.pt: high-noise expert 2 weights at 1")


def test_dual_cfg_workflow_with_step_caching(client, base, tmp_path):
    """The shipped dual-CFG workflow runs; with step caching on, the sampler says how many steps it skipped."""
    name = client.upload_image(base / "input" / "start.png")
    prompt = _prompt(client, "mova_i2va_dual_cfg.json", seed=11, image_name=name)
    outputs = {}
    videos, _ = _run(client, prompt, outputs)
    _check_mp4(client.download(videos[0], tmp_path / "dual.mp4"))
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "MovaSampler")
    assert "step caching" not in outputs[sampler]["text"][0]  # no caching, nothing to report on it
    next(n for n in prompt.values() if n["class_type"] == "MovaSamplerOptions")["inputs"]["cache_threshold"] = 0.5
    prompt[sampler]["inputs"]["steps"] = 10
    _run(client, prompt, outputs)
    assert re.fullmatch(r"step caching skipped [1-9] of 10 steps \(\d+%\)", outputs[sampler]["text"][0].split("\n")[-1])
    assert "MOVA Sampler: step caching skipped" in (base / "server.log").read_text()


def test_speed_options_inside_comfyui(client, base, tmp_path):
    """ComfyUI's own attention and compiled blocks run the dual-CFG workflow to an MP4; a GPU-only attention
    kernel is refused at queue time on this CPU server, on the options node, with the fix."""
    from comfy_client import ServerError
    name = client.upload_image(base / "input" / "start.png")
    prompt = _prompt(client, "mova_i2va_dual_cfg.json", seed=12, image_name=name)
    options = next(n for n in prompt.values() if n["class_type"] == "MovaSamplerOptions")["inputs"]
    options.update(attention="comfy", compile="blocks")
    videos, _ = _run(client, prompt)
    _check_mp4(client.download(videos[0], tmp_path / "speed.mp4"))
    log = (base / "server.log").read_text()
    assert re.search(r"MOVA Sampler: attention comfy; \d+ blocks compiled \(blocks\)", log)
    options.update(attention="sdpa_cudnn", compile="off")
    with pytest.raises(ServerError, match="refused the workflow.*attention: attention backend 'sdpa_cudnn' runs on "
                       "CUDA GPUs only.*choose 'auto' or 'sdpa'"):
        client.queue(prompt)


@pytest.fixture(scope="module")
def llm():
    """The language model server stand-in, in this process on 127.0.0.1 (ComfyUI's process calls it)."""
    with FakeLLMServer() as server:
        yield server


def _enhancer(prompt: dict, llm, **inputs) -> tuple[str, dict]:
    key, node = next((k, n) for k, n in prompt.items() if n["class_type"] == "MovaPromptEnhance")
    node["inputs"].update({"base_url": llm.url, "model": VISION_MODEL} | inputs)
    return key, node


def test_enhanced_workflow_end_to_end(client, base, llm, tmp_path):
    """Idea + first frame -> MOVA Prompt Enhance (the local test server) -> text encoder -> i2va -> MP4. The key
    comes from ComfyUI's environment into the request only; a re-queue reuses the caption without a request."""
    import base64
    import io

    from PIL import Image

    llm.reset()
    llm.required_key = LLM_KEY
    Image.new("RGB", (48, 40), (30, 160, 90)).save(tmp_path / "enhanced_start.png")  # no other test uploads it
    name = client.upload_image(tmp_path / "enhanced_start.png")
    prompt = _prompt(client, "mova_i2va_enhanced.json", seed=12, image_name=name)
    key, enhancer = _enhancer(prompt, llm, api_key_env=LLM_KEY_ENV)
    outputs = {}
    videos, _ = _run(client, prompt, outputs)
    _check_mp4(client.download(videos[0], tmp_path / "enhanced.mp4"))

    (request,) = llm.chat_requests()
    assert request["headers"]["authorization"] == f"Bearer {LLM_KEY}"
    body = request["body"]
    assert body["model"] == VISION_MODEL and body["seed"] == 0 and body["max_tokens"] == 2048
    assert enhancer["inputs"]["idea"] in body["messages"][1]["content"][0]["text"]
    url = body["messages"][1]["content"][1]["image_url"]["url"]
    picture = Image.open(io.BytesIO(base64.b64decode(url.removeprefix("data:image/png;base64,"))))
    assert picture.format == "PNG" and picture.size == (48, 40)
    assert [c for _, c in picture.convert("RGB").getcolors()] == [(30, 160, 90)]  # the frame MOVA starts from
    assert outputs[key]["text"][0] == caption_for(enhancer["inputs"]["idea"])  # cleaned: no think block, no fence
    positive = next(n for n in prompt.values() if n["class_type"] == "MovaTextEncode"
                    and isinstance(n["inputs"]["text"], list))
    assert positive["inputs"]["text"] == [key, 0]

    # re-queued with another sampler seed: the sampler runs again, the enhancer comes from ComfyUI's cache
    next(n for n in prompt.values() if n["class_type"] == "MovaSampler")["inputs"]["seed"] = 13
    videos, progress = _run(client, prompt)
    assert videos and [v for k, v in progress if k == "MovaSampler"][-1] == STEPS
    assert len(llm.chat_requests()) == 1

    # the key appears nowhere that is saved or logged
    history = json.dumps(client.get_json("/history"))
    assert LLM_KEY_ENV in history and LLM_KEY not in history
    assert LLM_KEY not in (base / "server.log").read_text()
    assert LLM_KEY not in (PACK / "example_workflows" / "mova_i2va_enhanced.json").read_text()
    assert LLM_KEY not in json.dumps(client.object_info()["MovaPromptEnhance"])


def test_prompt_tools_errors_reach_the_user(client, base, llm):
    """Builder -> Enhance -> Preview: the builder's caption is the idea; a text-only model given the first frame
    and a server that is down stop the run with messages that say what to do."""
    from comfy_client import ServerError
    llm.reset()
    builder = {w.name: "" for w in spec.PROMPT_BUILDER.widgets}
    builder |= {"scene": "A lighthouse on a cliff at night", "speaker_1": "the keeper", "language_1": "English",
                "words_1": "Storm's coming.", "effects": "waves crashing"}
    enhance = {w.name: w.default for w in spec.PROMPT_ENHANCE.widgets}
    enhance |= {"idea": ["1", 0], "base_url": llm.url, "model": VISION_MODEL}
    prompt = {"1": {"class_type": "MovaPromptBuilder", "inputs": builder},
              "2": {"class_type": "MovaPromptEnhance", "inputs": enhance},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    outputs = {}
    _run(client, prompt, outputs)
    (request,) = llm.chat_requests()
    assert 'The keeper says, "Storm\'s coming."' in request["body"]["messages"][1]["content"]
    assert outputs["3"]["text"][0].startswith("A woman waits under an awning")

    name = client.upload_image(base / "input" / "start.png")
    prompt["4"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    prompt["2"]["inputs"] |= {"model": TEXT_MODEL, "image": ["4", 0]}
    with pytest.raises(ServerError, match=f"'{TEXT_MODEL}' cannot read images.*retry_without_image"):
        _run(client, prompt)
    prompt["2"]["inputs"]["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerError, match="cannot reach the language model server at http://127.0.0.1:.*ollama serve"):
        _run(client, prompt)


def _log_after(base: Path, start: int) -> str:
    return (base / "server.log").read_text()[start:]


def _has_fp8_layers(kind: str) -> bool:
    """Whether this ComfyUI's comfy.ops has ``kind`` (feature, read from its source: no version numbers)."""
    return f"def {kind}(" in (Path(COMFYUI) / "comfy" / "ops.py").read_text()


@pytest.mark.parametrize("layout", FP8_LAYOUTS)
def test_converted_fp8_files_run(client, base, tmp_path, layout):
    """The converter's fp8 files, in either key layout, load through the nodes as stored and run to an MP4 with the
    running ComfyUI's own fp8 layers (mixed_precision_ops where it has them, else scaled_fp8_ops); the log names
    the layers and the patcher class each loader used."""
    start = len((base / "server.log").read_text())
    prompt = _prompt(client, "mova_t2va.json", seed=12)
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, str) and value in CONVERTED:
                node["inputs"][name] = f"converted_{layout}/mova_tiny_{CONVERTED[value]}_fp8_e4m3fn_scaled.safetensors"
    videos, _ = _run(client, prompt)
    _check_mp4(client.download(videos[0], tmp_path / f"{layout}.mp4"))
    family = "mixed_precision_ops" if _has_fp8_layers("mixed_precision_ops") else "scaled_fp8_ops"
    log = _log_after(base, start)
    for loader, stem in (("Video Expert", "video_dit_high"), ("Video Expert", "video_dit_low"),
                         ("Audio Tower", "audio_dit")):
        assert re.search(rf"MOVA {loader} Loader: \S*converted_{layout}/mova_tiny_{stem}_fp8_e4m3fn_scaled"
                         rf"\.safetensors.* loaded with comfy\.ops\.{family} .*, patcher comfy\.model_patcher\.\w+",
                         log), \
            log[-3000:]


def test_experts_stay_loaded_between_queues(client, base):
    """Both experts fit beside each other (always so on the CPU): the next queue finds them loaded, so ComfyUI
    loads no expert again."""
    _run(client, _prompt(client, "mova_t2va.json", seed=14))
    start = len((base / "server.log").read_text())
    _run(client, _prompt(client, "mova_t2va.json", seed=15))
    log = _log_after(base, start)
    assert "MOVA Sampler: both video experts stay loaded" in log
    assert "Requested to load WanDiT" not in log, log[-3000:]


def _saved_latent(base: Path, outputs: dict, node: str) -> torch.Tensor:
    from safetensors.torch import load_file
    entry = outputs[node]["latents"][0]
    return load_file(str(base / "output" / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def test_video_latent_through_stock_latent_nodes(client, base):
    """The MOVA Sampler's video LATENT is a plain Wan 2.1 latent for core's latent nodes: Latent Cut along time,
    Replace Video Latent Frames (where this ComfyUI has it), Save Latent, and VAE Decode of the result."""
    info = client.object_info()
    prompt = _prompt(client, "mova_t2va.json", seed=13)
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "MovaSampler")
    vae = next(k for k, n in prompt.items() if n["class_type"] == "VAELoader")

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
    _run(client, prompt, outputs)
    from comfyui_mova.mova_model.sizes import VAE_TIME, latent_shapes
    from tiny_release import DAC_16K
    full, cut = _saved_latent(base, outputs, "40"), _saved_latent(base, outputs, "42")
    assert tuple(full.shape) == latent_shapes(1, HEIGHT, WIDTH, FRAMES, FPS, DAC_16K, DAC_16K.latent_dim).video
    assert torch.equal(cut, full[:, :, 1:4])
    assert len(outputs["44"]["images"]) == 1 + VAE_TIME * (cut.shape[2] - 1)  # VAE Decode of 3 latent frames
    if replace:
        replaced = _saved_latent(base, outputs, "47")
        assert torch.equal(replaced[:, :, 2], full[:, :, 0])
        assert torch.equal(replaced[:, :, :2], full[:, :, :2]) and torch.equal(replaced[:, :, 3:], full[:, :, 3:])
def _train_prompt(client, run_name: str, steps: int, filename: str, checkpoint_every: int = 2) -> dict:
    """The shipped training workflow as an API prompt at test size, with the tiny real CLIP in place of UMT5-XXL."""
    from workflow_api import missing_models, ui_to_api
    info = client.object_info()
    prompt = ui_to_api(json.loads((PACK / "example_workflows" / "mova_train_lora.json").read_text()), info)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CLIPLoader":
            node["class_type"], node["inputs"] = "TestTinyUMT5Loader", {"kind": "umt5xxl"}
        elif kind == "MovaDataset":
            inputs.update(width=WIDTH, height=HEIGHT, length=TRAIN_FRAMES, fps=FPS)
        elif kind == "MovaTrainLora":
            inputs.update(run_name=run_name, steps=steps, checkpoint_every=checkpoint_every, learning_rate=0.001)
        elif kind == "MovaSaveLora":
            inputs.update(filename=filename)
    assert missing_models(prompt, info) == []
    return prompt


def _key(prompt: dict, class_type: str) -> str:
    return next(k for k, n in prompt.items() if n["class_type"] == class_type)


def test_training_workflow_clips_to_a_lora_the_loader_applies(client, base):
    """Folder of clips -> MOVA Dataset -> MOVA Train LoRA (progress per step) -> MOVA Save LoRA in models/loras;
    the saved file then goes through the MOVA LoRA Loader as W + s·(alpha/rank)·B·A."""
    from safetensors import safe_open
    prompt = _train_prompt(client, "itest", steps=4, filename="mova/itest_lora")
    outputs = {}
    _, progress = _run(client, prompt, outputs)
    assert [v for k, v in progress if k == "MovaTrainLora"][-1] == 4
    train_text = outputs[_key(prompt, "MovaTrainLora")]["text"][0]
    assert train_text.startswith("trained steps 1-4") and "high-noise loss" in train_text, train_text
    assert outputs[_key(prompt, "MovaDataset")]["text"][0].startswith("2 clips encoded to mova_clips_32x32x9_24fps_")
    assert outputs[_key(prompt, "PreviewImage")]["images"]  # the loss curve
    saved = base / "models" / "loras" / "mova" / "itest_lora.safetensors"
    assert outputs[_key(prompt, "MovaSaveLora")]["text"][0].startswith(f"saved {saved}")
    assert sorted(p.name for p in (base / "output" / "mova_training" / "itest").iterdir()) == \
        ["step_000002.safetensors", "step_000004.safetensors"]
    with safe_open(str(saved), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    rank, alpha = int(meta["rank"]), float(meta["alpha"])
    assert (rank, alpha) == (8, 8.0) and "video_dit.blocks.0.self_attn.q.lora_A.weight" in tensors
    strengths = dict(zip(STRENGTHS, (0.5, 1.5, -1.0, 2.0)))
    loader = lora_node(None, "mova/itest_lora.safetensors", strengths)
    outputs = {}
    _run(client, loaders() | {"10": loader, "20": probe_node(["10", 0], ["10", 2]),
                              "21": probe_node(["10", 1], ["10", 2])}, outputs)
    assert outputs["10"]["text"][0].startswith("mova/itest_lora.safetensors: high-noise expert 16 weights at 0.5")
    component_strength = dict(zip(("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"),
                                  (0.5, 1.5, -1.0, 2.0)))
    changed = 0
    for node, expert in (("20", "video_dit"), ("21", "video_dit_2")):
        for entry, (_, values) in probed(outputs, node).items():
            component, module = PROBED[entry]
            component = expert if entry.startswith("expert:") else component
            w = original(base / "models", entry, expert)
            delta = torch.zeros_like(w)
            if f"{component}.{module}.lora_A.weight" in tensors:
                a, b = tensors[f"{component}.{module}.lora_A.weight"], tensors[f"{component}.{module}.lora_B.weight"]
                delta = (component_strength[component] * alpha / rank * (b @ a)).flatten()
                changed += int(delta.abs().max() > 0)
            assert torch.allclose(values, w + delta, atol=1e-5), (node, entry)
    assert changed >= 4  # the trained B matrices are not zero: the LoRA changes the weights
    # the trained LoRA straight into the loader's lora input (queued again, the run finds its final checkpoint
    # and has nothing left to train): the same weights as through the saved file
    prompt = _train_prompt(client, "itest", steps=4, filename="mova/itest_lora")
    for key in (_key(prompt, "MovaSaveLora"), _key(prompt, "PreviewImage")):
        del prompt[key]
    experts = sorted((k for k, n in prompt.items() if n["class_type"] == "MovaVideoExpertLoader"),
                     key=lambda k: prompt[k]["inputs"]["model_name"])
    parts = [[experts[0], 0], [experts[1], 0], [_key(prompt, "MovaAudioTowerLoader"), 0]]
    direct = lora_node(None, "not_saved.safetensors", strengths)  # a lora_name that is not there: not needed
    direct["inputs"].update(zip(("high_noise_expert", "low_noise_expert", "audio_tower"), parts),
                            lora=[_key(prompt, "MovaTrainLora"), 0])
    prompt |= {"30": direct, "31": probe_node(["30", 0], ["30", 2])}
    direct_outputs = {}
    _run(client, prompt, direct_outputs)
    assert direct_outputs["30"]["text"][0].startswith("itest (trained, 4 steps): high-noise expert 16 weights at 0.5")
    assert "MOVA Train LoRA itest: nothing to train: the run already has 4 steps" in (base / "server.log").read_text()
    for entry, (_, values) in probed(direct_outputs, "31").items():
        assert torch.allclose(values, probed(outputs, "20")[entry][1], atol=1e-6), entry


def test_training_continues_and_never_overwrites_a_lora(client, base):
    """Queued again with more steps, training continues from the last checkpoint; a taken file name stops the
    run at MOVA Save LoRA and the file is kept; another name then saves the continued LoRA."""
    from comfy_client import ServerError
    from safetensors.torch import load_file
    taken = base / "models" / "loras" / "itest_again.safetensors"
    taken.write_bytes(b"taken")
    with pytest.raises(ServerError, match="itest_again.safetensors already exists: switch overwrite on"):
        _run(client, _train_prompt(client, "itest", steps=6, filename="itest_again"))
    assert taken.read_bytes() == b"taken"
    log = (base / "server.log").read_text()
    assert "trained steps 5-6 (continued from the checkpoint at step 4)" in log
    _run(client, _train_prompt(client, "itest", steps=6, filename="itest_6"))
    # nothing was trained twice: ComfyUI kept the trained LoRA of the failed run, or the run found its final
    # checkpoint
    assert (base / "server.log").read_text().count("trained steps 5-6") == 1
    saved = load_file(str(base / "models" / "loras" / "itest_6.safetensors"))
    checkpoint = load_file(str(base / "output" / "mova_training" / "itest" / "step_000006.safetensors"))
    assert saved.keys() == {k for k in checkpoint if not k.startswith("optimizer.")}
    assert all(torch.equal(saved[k], checkpoint[k]) for k in saved)


def test_cancel_stops_training_and_the_checkpoint_continues(client, base):
    prompt = _train_prompt(client, "icancel", steps=1000, filename="icancel", checkpoint_every=2)
    _cancel_during(client, prompt, lambda data: data.get("node") == _key(prompt, "MovaTrainLora") and data["value"] >= 3,
                   "no progress from MOVA Train LoRA", timeout=300)
    run = base / "output" / "mova_training" / "icancel"
    last = max(int(p.stem.split("_")[1]) for p in run.glob("step_*.safetensors"))
    assert last >= 2 and not list(run.glob("*.tmp"))
    prompt = _train_prompt(client, "icancel", steps=last + 1, filename="icancel")
    outputs = {}
    _run(client, prompt, outputs)
    text = outputs[_key(prompt, "MovaTrainLora")]["text"][0]
    assert text.startswith(f"trained steps {last + 1}-{last + 1} (continued from the checkpoint at step {last})"), text


def test_training_on_fp8_weights(client, base):
    """Experts and audio tower loaded as fp8_e4m3fn (ComfyUI's scaled-fp8 layers): a float32 LoRA trains on them."""
    from safetensors.torch import load_file
    prompt = _train_prompt(client, "ifp8", steps=2, filename="ifp8")
    for node in prompt.values():
        if node["class_type"] in ("MovaVideoExpertLoader", "MovaAudioTowerLoader"):
            node["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    outputs = {}
    _run(client, prompt, outputs)
    text = outputs[_key(prompt, "MovaTrainLora")]["text"][0]
    assert text.startswith("trained steps 1-2"), text
    saved = load_file(str(base / "models" / "loras" / "ifp8.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())
    assert any(t.abs().max() > 0 for k, t in saved.items() if "lora_B" in k)



def _text_graph(encoders: dict) -> dict:
    """A tiny UMT5 CLIP (node 1) feeding text nodes {id: (class_type, text)}, each probed (node id + 100)."""
    prompt = {"1": {"class_type": "TestTinyUMT5Loader", "inputs": {"kind": "umt5xxl"}}}
    for key, (kind, text) in encoders.items():
        prompt[key] = {"class_type": kind, "inputs": {"clip": ["1", 0], "text": text}}
        prompt[str(int(key) + 100)] = {"class_type": "TestConditioningProbe", "inputs": {"conditioning": [key, 0]}}
    return prompt


def test_text_encode_is_literal_and_cleaned(client):
    """MOVA Text Encode through a real ComfyUI CLIP: the official cleaning, brackets as plain text (what stock CLIP
    Text Encode gives only with escaped brackets), padded to 512 states with the padding zeroed."""
    spoken = 'He laughs (softly) and says, "Fish & chips?"'
    prompt = _text_graph({
        "10": ("MovaTextEncode", '  He laughs (softly)\n\n and says,  "Fish &amp;amp; chips?" '),
        "11": ("CLIPTextEncode", spoken.replace("(", "\\(").replace(")", "\\)")),  # stock, escaped: literal
        "12": ("CLIPTextEncode", spoken),  # stock: (softly) is emphasis, weighted 1.1
        "13": ("MovaTextEncode", "a \\(b\\)"), "14": ("CLIPTextEncode", "a \\\\(b\\\\)"),
    })
    outputs = {}
    _run(client, prompt, outputs)
    found = {key: json.loads(outputs[str(int(key) + 100)]["states"][0]) for key in ("10", "11", "12", "13", "14")}
    assert found["10"]["shape"] == [1, 512, 4096]
    assert found["10"]["rows"] == len(spoken) + 1  # one token per byte, and the end token
    assert found["10"]["sha256"] == found["11"]["sha256"]
    assert found["12"]["sha256"] != found["10"]["sha256"]
    assert found["13"]["sha256"] == found["14"]["sha256"] and found["13"]["rows"] == len("a \\(b\\)") + 1
    assert "10" not in outputs  # nothing to warn about


def test_long_prompt_is_cut_at_512_tokens_with_a_warning(client, base):
    long_text = "The audio shows " + "rain on the roof, " * 40  # 736 bytes: a token each for the byte tokenizer
    prompt = _text_graph({"10": ("MovaTextEncode", long_text), "11": ("MovaTextEncode", long_text[:511]),
                          "12": ("CLIPTextEncode", long_text)})
    outputs = {}
    _run(client, prompt, outputs)
    found = {key: json.loads(outputs[str(int(key) + 100)]["states"][0]) for key in ("10", "11", "12")}
    assert found["10"]["shape"] == [1, 512, 4096] and found["10"]["rows"] == 512
    assert found["10"]["sha256"] == found["11"]["sha256"]  # the first 511 tokens and the end token
    assert found["12"]["shape"][1] == len(long_text) + 1  # stock: no cleaning (the last space stays), no cut
    text = outputs["10"]["text"][0]
    assert text.startswith(f"warning: the prompt is {len(long_text.rstrip()) + 1} tokens long; MOVA reads the "
                           "first 512 as the official pipeline does")
    assert f'it drops: "{long_text[511:511 + 20].strip()}' in text
    assert "MOVA Text Encode: the prompt is" in (base / "server.log").read_text()


def test_conditioning_cuts_long_stock_states_with_a_warning(client):
    """Stock CLIP Text Encode does not cut: MOVA Conditioning cuts its states to 512 and says so on the node."""
    long_text = "rain on the roof, " * 40
    prompt = _text_graph({"10": ("CLIPTextEncode", long_text), "11": ("MovaTextEncode", "blurry")})
    del prompt["110"], prompt["111"]
    prompt |= {
        "20": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "21": {"class_type": "MovaAudioVAELoader", "inputs": {"vae_name": "MOVA-360p/audio_vae",
                                                              "weight_dtype": "default"}},
        "22": {"class_type": "MovaConditioning", "inputs": {
            "positive": ["10", 0], "negative": ["11", 0], "vae": ["20", 0], "audio_vae": ["21", 0],
            "width": WIDTH, "height": HEIGHT, "length": 5, "fps": FPS}},
        "23": {"class_type": "PreviewAny", "inputs": {"source": ["22", 2]}},
    }
    outputs = {}
    _run(client, prompt, outputs)
    assert outputs["22"]["text"][0].startswith(
        f"warning: positive: {len(long_text) + 1} text states, MOVA reads at most 512")


def test_wrong_text_encoder_stops_before_any_vae_work(client):
    from comfy_client import ServerError
    prompt = _prompt(client, "mova_t2va.json", seed=12)
    loader = next(n for n in prompt.values() if n["class_type"] == "TestTinyUMT5Loader")
    loader["inputs"]["kind"] = "t5xxl"
    with pytest.raises(ServerError, match=r"this CLIP is T5-XXL \(SD3 / Flux\), MOVA needs UMT5-XXL.*type wan"):
        _run(client, prompt)


# --- beyond image-to-video: first + last frame, sound -> video, video -> audio, longer clips ---------------------

RATE = 16000  # the tiny release's audio codec (tests/tiny_release.py)


def _node_key(prompt: dict, class_type: str) -> str:
    (key,) = [k for k, n in prompt.items() if n["class_type"] == class_type]
    return key


def test_first_last_frame_condition_equals_comfyui_wan_node(client):
    """The same VAE and pictures: MOVA Conditioning's condition equals what ComfyUI's WanFirstLastFrameToVideo
    makes for a Wan 2.2 I2V model (its concat_latent_image + concat_mask through the model's concat_cond)."""
    text = lambda words: {"class_type": "MovaTextEncode", "inputs": {"text": words, "clip": ["0", 0]}}  # noqa: E731
    size = {"width": WIDTH, "height": HEIGHT, "length": FRAMES}
    prompt = {
        "0": {"class_type": "TestTinyUMT5Loader", "inputs": {"kind": "umt5xxl"}},
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "2": {"class_type": "MovaAudioVAELoader", "inputs": {"vae_name": "MOVA-360p/audio_vae", "weight_dtype": "default"}},
        "3": text("a pier at dawn"), "4": text("blurry"),
        "5": {"class_type": "LoadImage", "inputs": {"image": "first32.png"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "last32.png"}},
        "7": {"class_type": "WanFirstLastFrameToVideo", "inputs": size | {
            "positive": ["3", 0], "negative": ["4", 0], "vae": ["1", 0], "batch_size": 1, "start_image": ["5", 0],
            "end_image": ["6", 0]}},
        "8": {"class_type": "MovaConditioning", "inputs": size | {
            "positive": ["3", 0], "negative": ["4", 0], "vae": ["1", 0], "audio_vae": ["2", 0], "fps": FPS,
            "start_image": ["5", 0], "end_image": ["6", 0]}},
        "9": {"class_type": "TestWanConcatProbe", "inputs": {"positive": ["7", 0], "latent": ["7", 2],
                                                              "mova": ["8", 0]}},
    }
    outputs = {}
    _run(client, prompt, outputs)
    found = json.loads(outputs["9"]["condition"][0])
    comfy = torch.tensor(found["comfy"]).view(found["comfy_shape"])
    mova = torch.tensor(found["mova"]).view(found["mova_shape"])
    assert comfy.shape == mova.shape == (1, 20, (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
    assert torch.equal(mova[:, :4], comfy[:, :4])  # the mask: first frame in all 4 slots, the last in one
    assert mova[0, :4, -1, 0, 0].tolist() == [0, 0, 0, 1]
    assert torch.equal(mova[:, 4:], comfy[:, 4:]), (mova - comfy).abs().max()  # the latents, bit for bit


def test_first_last_frame_workflow_end_to_end(client, tmp_path):
    prompt = _prompt(client, "mova_flf2va.json", seed=21, image_name="first32.png", end_image_name="last32.png")
    videos, _ = _run(client, prompt)
    print("flf2va MP4 (frames, samples):", _check_mp4(client.download(videos[0], tmp_path / "flf.mp4")))


def test_sound_to_video_workflow_end_to_end(client, base, tmp_path):
    """Load Audio (stereo 44.1 kHz, longer than the clip) -> the MP4's soundtrack is that sound, mono at the codec's
    rate and cut to the clip: Preview Audio's lossless copy equals it (to 16-bit rounding), no codec round trip."""
    prompt = _prompt(client, "mova_a2v.json", seed=22, image_name="start.png", audio_name="speech.wav")
    outputs = {}
    videos, _ = _run(client, prompt, outputs)
    print("a2v MP4 (frames, samples):", _check_mp4(client.download(videos[0], tmp_path / "a2v.mp4")))
    samples = int(RATE * FRAMES / FPS)
    report = outputs[_node_key(prompt, "MovaConditioning")]["text"][0]
    assert f"cut at {samples / RATE:.3f} s (sample {samples} of" in report and "44100 Hz, 2 channels" in report
    (preview,) = outputs[_node_key(prompt, "PreviewAudio")]["audio"]
    heard, rate = read_audio(client.download(preview, tmp_path / "a2v.flac"))
    expected = fitted_speech(base / "input" / "speech.wav", RATE, samples)
    assert rate == RATE and heard.shape == expected.shape
    worst = int((heard - expected).abs().argmax())
    assert (heard - expected).abs().max() < 2 / 32768, \
        (worst, heard[worst].item(), expected[worst].item(), heard[:8].tolist(), expected[:8].tolist())


def test_video_to_audio_workflow_end_to_end(client, base, tmp_path):
    """Load Video (27 frames, 48x40) -> the first 25 frames kept, a new soundtrack; the MP4 has the video's own
    frames at their own size. A length the video cannot fill is refused with the length to use."""
    from comfy_client import ServerError
    prompt = _prompt(client, "mova_v2a.json", seed=23, video_name="clip.mp4")
    outputs = {}
    videos, _ = _run(client, prompt, outputs)
    print("v2a MP4 (frames, samples):",
          _check_mp4(client.download(videos[0], tmp_path / "v2a.mp4"), FRAMES, VIDEO_SIZE))
    report = outputs[_node_key(prompt, "MovaConditioning")]["text"][0]
    assert f"video: {VIDEO_FRAMES} frames" in report and f"the last {VIDEO_FRAMES - FRAMES} are cut" in report
    prompt[_node_key(prompt, "MovaConditioning")]["inputs"]["length"] = FRAMES + 4
    with pytest.raises(ServerError, match=f"the video has {VIDEO_FRAMES} frames but length is {FRAMES + 4}: "
                       f"set length to {FRAMES}"):
        _run(client, prompt)


def test_extend_workflow_end_to_end(client, tmp_path):
    """Two prompts, two clips: 25 frames, then 25 more overlapping by 9 -> one MP4 of 41 frames whose sound
    lasts exactly as long."""
    prompt = _prompt(client, "mova_extend.json", seed=24, image_name="start.png")
    extend = prompt[_node_key(prompt, "MovaExtend")]["inputs"]
    extend.update(length=FRAMES, overlap=9, crossfade=0.05)
    outputs = {}
    videos, progress = _run(client, prompt, outputs)
    assert [v for k, v in progress if k == "MovaSampler"].count(STEPS) == 2
    total = FRAMES + FRAMES - 9
    print("extend MP4 (frames, samples):", _check_mp4(client.download(videos[0], tmp_path / "extend.mp4"), total))
    assert f"joined: {total} frames" in outputs[_node_key(prompt, "MovaExtend")]["text"][0]
    (preview,) = outputs[_node_key(prompt, "PreviewAudio")]["audio"]
    heard, _ = read_audio(client.download(preview, tmp_path / "extend.flac"))
    assert heard.shape[0] == int(RATE * total / FPS)  # the joined sound, sample-exact


# The native path: SamplerCustomAdvanced with stock noise and samplers, the MOVA Guider and MOVA Scheduler, on the
# joint latent in core's audio-video form (ComfyUI 0.8 and later: comfy/nested_tensor.py).
NATIVE = bool(COMFYUI) and (Path(COMFYUI) / "comfy" / "nested_tensor.py").is_file()
needs_native = pytest.mark.skipif(not NATIVE, reason="this ComfyUI has no nested (audio-video) latents (before 0.8)")


def _native(client, seed: int, sampler: str = "euler", scheduler: str = "official", **params) -> dict:
    """The native workflow as an API prompt at the test size, with ``sampler`` and ``scheduler``."""
    prompt = _prompt(client, "mova_i2va_native.json", seed=seed, image_name="start.png", **params)
    prompt[_node_key(prompt, "KSamplerSelect")]["inputs"]["sampler_name"] = sampler
    prompt[_node_key(prompt, "MovaScheduler")]["inputs"]["scheduler"] = scheduler
    return prompt


@needs_native
def test_native_euler_official_equals_mova_sampler(client, base, tmp_path):
    """Euler + MOVA Scheduler (official) + stock Random Noise + MOVA Guider: the MOVA Sampler's latents (float32, the
    tiny release) from the same conditioning and seed; the native workflow ends in an MP4 with audio, with progress."""
    from mova_testing import rel_l2
    prompt = _native(client, seed=31)
    cond, guider = _node_key(prompt, "MovaConditioning"), _node_key(prompt, "MovaGuider")
    split = _node_key(prompt, "MovaSeparateAVLatent")
    inputs = prompt[guider]["inputs"]
    prompt |= {
        "50": {"class_type": "MovaSampler", "inputs": {
            k: inputs[k] for k in ("high_noise_expert", "low_noise_expert", "audio_tower", "conditioning", "cfg",
                                   "shift", "boundary_ratio")} | {"latent": [cond, 1], "seed": 31, "steps": STEPS}},
        "51": {"class_type": "TestMovaLatentProbe", "inputs": {"video": ["50", 0], "audio": ["50", 1]}},
        "52": {"class_type": "TestMovaLatentProbe", "inputs": {"video": [split, 0], "audio": [split, 1]}},
    }
    outputs = {}
    videos, progress = _run(client, prompt, outputs)
    reference, native = probed_latents(outputs, "51"), probed_latents(outputs, "52")
    for ref, out in zip(reference, native):
        assert ref.shape == out.shape and rel_l2(out, ref) <= 1e-5, rel_l2(out, ref)
    print("native vs MOVA Sampler, relative L2 (video, audio):", [rel_l2(o, r) for r, o in zip(reference, native)])
    steps = [value for kind, value in progress if kind == "SamplerCustomAdvanced"]
    assert steps[-1] == STEPS and steps == sorted(steps)
    assert "MOVA Guider: 4 steps, the official timesteps" in (base / "server.log").read_text()
    _check_mp4(client.download(videos[0], tmp_path / "native.mp4"))


@needs_native
def test_native_parity_on_the_golden_release(client, base, golden_dir, golden_cases):
    """The same on the golden tiny release at the golden case's size, steps and seed: ComfyUI's euler, MOVA
    Scheduler (official), Random Noise and the MOVA Guider give the MOVA Sampler's latents (float32, <= 1e-5)."""
    from mova_testing import rel_l2
    links = [base / "models" / folder / "MOVA-golden" for folder in ("diffusion_models", "vae")]
    for link in links:
        link.symlink_to(golden_dir / "checkpoint", target_is_directory=True)
    try:
        c = golden_cases
        prompt = _native(client, seed=c["seed"])
        for kind in ("SaveVideo", "PreviewAudio", "CreateVideo", "VAEDecode", "MovaAudioDecode"):
            del prompt[_node_key(prompt, kind)]
        for node in prompt.values():
            inputs = node["inputs"]
            for key in ("model_name", "audio_dit_name", "bridge_name", "vae_name"):
                if isinstance(inputs.get(key), str) and inputs[key].startswith("MOVA-360p/"):
                    inputs[key] = inputs[key].replace("MOVA-360p/", "MOVA-golden/")
        cond, guider = _node_key(prompt, "MovaConditioning"), _node_key(prompt, "MovaGuider")
        prompt[cond]["inputs"].update(width=c["width"], height=c["height"], length=c["num_frames"], fps=c["fps"])
        prompt[guider]["inputs"]["boundary_ratio"] = c["boundary_ratio"]
        prompt[_node_key(prompt, "MovaScheduler")]["inputs"]["steps"] = c["sample_steps"]
        split, inputs = _node_key(prompt, "MovaSeparateAVLatent"), prompt[guider]["inputs"]
        prompt |= {
            "80": {"class_type": "MovaSampler", "inputs": {
                k: inputs[k] for k in ("high_noise_expert", "low_noise_expert", "audio_tower", "conditioning", "cfg",
                                       "shift", "boundary_ratio")}
                | {"latent": [cond, 1], "seed": c["seed"], "steps": c["sample_steps"]}},
            "81": {"class_type": "TestMovaLatentProbe", "inputs": {"video": ["80", 0], "audio": ["80", 1]}},
            "82": {"class_type": "TestMovaLatentProbe", "inputs": {"video": [split, 0], "audio": [split, 1]}},
        }
        outputs = {}
        _run(client, prompt, outputs)
    finally:
        for link in links:
            link.unlink()
    from comfyui_mova.mova_model.sizes import VAE_SPACE, VAE_TIME
    reference, native = probed_latents(outputs, "81"), probed_latents(outputs, "82")
    assert reference[0].shape[2:] == ((c["num_frames"] - 1) // VAE_TIME + 1, c["height"] // VAE_SPACE,
                                      c["width"] // VAE_SPACE)
    assert reference[1].shape[-1] == c["audio_latent_length"]
    for ref, out in zip(reference, native):
        assert ref.shape == out.shape and rel_l2(out, ref) <= 1e-5, rel_l2(out, ref)
    print("golden: native vs MOVA Sampler, relative L2 (video, audio):",
          [rel_l2(o, r) for r, o in zip(reference, native)])


def _check_previews(previews: list[bytes]) -> None:
    """The sampler sent live previews (``--preview-method auto``): ComfyUI's binary messages of event 1 (a preview
    image: 4 bytes event, 4 bytes format, the image), each a picture PIL opens, as for the stock samplers."""
    from PIL import Image
    images = [p for p in previews if int.from_bytes(p[:4], "big") == 1]
    assert images, f"no preview among {len(previews)} binary messages"
    for payload in images:
        with Image.open(io.BytesIO(payload[8:])) as picture:
            assert picture.size[0] > 0 and picture.size[1] > 0


@needs_native
@pytest.mark.parametrize("sampler,scheduler", [("res_multistep", "simple"), ("dpmpp_2m", "official")])
def test_native_second_order_samplers_to_mp4(client, tmp_path, sampler, scheduler):
    """Second-order stock samplers (a stock or the official schedule) run MOVA to an MP4 with audio; Random Noise
    seeds the run: the same seed twice gives the same latents."""
    prompt = _native(client, seed=32, sampler=sampler, scheduler=scheduler)
    split = _node_key(prompt, "MovaSeparateAVLatent")
    prompt["60"] = {"class_type": "TestMovaLatentProbe", "inputs": {"video": [split, 0], "audio": [split, 1]}}
    first, second, previews = {}, {}, []
    videos, _ = _run(client, prompt, first, previews)
    _check_mp4(client.download(videos[0], tmp_path / f"{sampler}.mp4"))
    _check_previews(previews)
    # again, through stock Split Sigmas (all of them): the sampler runs anew, Random Noise draws from the seed again
    sigmas = _node_key(prompt, "MovaScheduler")
    prompt["61"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": [sigmas, 0], "step": STEPS}}
    prompt[_node_key(prompt, "SamplerCustomAdvanced")]["inputs"]["sigmas"] = ["61", 0]
    _run(client, prompt, second)
    for a, b in zip(probed_latents(first, "60"), probed_latents(second, "60")):
        assert torch.equal(a, b)


@needs_native
def test_native_keeps_the_given_sound(client, base):
    """Sound -> video on the native path: the audio part of the joint latent is kept (mask 0), so a stock sampler
    returns it unchanged; core's LTXV Separate AV Latent splits the joint latent (its masks nested)."""
    prompt = _native(client, seed=33, sampler="dpmpp_2m")
    cond = _node_key(prompt, "MovaConditioning")
    sampler = _node_key(prompt, "SamplerCustomAdvanced")
    prompt |= {
        "70": {"class_type": "LoadAudio", "inputs": {"audio": "speech.wav"}},
        "71": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": [cond, 4]}},
        "72": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": [sampler, 0]}},
        "73": {"class_type": "SaveLatent", "inputs": {"samples": ["71", 1], "filename_prefix": "latents/native_given"}},
        "74": {"class_type": "SaveLatent", "inputs": {"samples": ["72", 1], "filename_prefix": "latents/native_audio"}},
        "75": {"class_type": "SaveLatent", "inputs": {"samples": ["72", 0], "filename_prefix": "latents/native_video"}},
    }
    prompt[cond]["inputs"]["audio"] = ["70", 0]
    outputs = {}
    _run(client, prompt, outputs)
    given, sampled = _saved_latent(base, outputs, "73"), _saved_latent(base, outputs, "74")
    assert given.abs().sum() > 0 and torch.equal(sampled, given)
    video = _saved_latent(base, outputs, "75")
    assert video.dim() == 5 and torch.isfinite(video).all() and video[:, :, 1:].abs().sum() > 0


@needs_native
def test_native_extension_keeps_the_overlap(client, base):
    """MOVA Extend's av_latent on the native path: the first clip sampled natively, decoded and extended; a second
    MOVA Guider on the extension's conditioning with the same stock noise, sampler and sigmas returns the overlap's
    latent frames and audio steps as MOVA Extend gave them, and generates the rest."""
    overlap = 9
    prompt = _native(client, seed=36, sampler="dpmpp_2m")
    cond, guider, sampler = (_node_key(prompt, t) for t in ("MovaConditioning", "MovaGuider", "SamplerCustomAdvanced"))
    given = prompt[cond]["inputs"]
    prompt |= {
        "80": {"class_type": "MovaExtend", "inputs": {
            k: given[k] for k in ("positive", "negative", "vae", "audio_vae")} | {
            "images": [_node_key(prompt, "VAEDecode"), 0], "audio": [_node_key(prompt, "MovaAudioDecode"), 0],
            "length": FRAMES, "overlap": overlap, "fps": FPS, "crossfade": 0.05}},
        "81": {"class_type": "MovaGuider", "inputs": prompt[guider]["inputs"] | {"conditioning": ["80", 0]}},
        "82": {"class_type": "SamplerCustomAdvanced", "inputs": prompt[sampler]["inputs"] | {
            "guider": ["81", 0], "latent_image": ["80", 3]}},
        "83": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["80", 3]}},
        "84": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["82", 0]}},
    }
    for i, (source, part, name) in enumerate([("83", 0, "given_video"), ("83", 1, "given_audio"),
                                              ("84", 0, "video"), ("84", 1, "audio")]):
        prompt[str(85 + i)] = {"class_type": "SaveLatent", "inputs": {
            "samples": [source, part], "filename_prefix": f"latents/extend_{name}"}}
    outputs = {}
    _run(client, prompt, outputs)
    given_video, given_audio, video, audio = (_saved_latent(base, outputs, str(85 + i)) for i in range(4))
    kept = (overlap - 1) // 4 + 1  # latent frames of the overlap
    assert given_video[:, :, :kept].abs().sum() > 0 and torch.all(given_video[:, :, kept:] == 0)
    assert torch.equal(video[:, :, :kept], given_video[:, :, :kept])
    assert video[:, :, kept:].abs().sum() > 0 and torch.isfinite(video).all()
    steps = (given_audio.abs().sum(dim=1) > 0)[0]  # audio latent steps MOVA Extend filled in (the rest is zero)
    keep = int(steps.long().cumprod(0).sum())
    assert keep > 0 and not steps[keep:].any()
    assert torch.equal(audio[..., :keep], given_audio[..., :keep]) and audio[..., keep:].abs().sum() > 0


@needs_native
def test_native_cancel_stops_the_guider(client):
    """Cancel during SamplerCustomAdvanced stops the MOVA Guider between model calls."""
    prompt = _native(client, seed=34)
    prompt[_node_key(prompt, "MovaScheduler")]["inputs"]["steps"] = 1000
    _cancel_during(client, prompt, lambda data: prompt.get(data.get("node"), {}).get("class_type") ==
                   "SamplerCustomAdvanced", "no progress from the sampler")


@pytest.mark.skipif(NATIVE, reason="this ComfyUI has nested latents: the native path runs")
def test_native_path_refused_with_what_to_do_before_0_8(client, tmp_path):
    """ComfyUI before 0.8: the native workflow is refused at queue time with what it needs; the MOVA Sampler runs,
    also on MOVA Conditioning's av_latent output (here the same latent)."""
    from comfyui_mova.nodes.av_latent import NATIVE_NEEDS
    prompt = _prompt(client, "mova_i2va_native.json", seed=35, image_name="start.png")
    errors = _refusal(client, prompt)
    assert any(NATIVE_NEEDS in detail for detail in errors[_node_key(prompt, "MovaGuider")]), errors
    prompt = _prompt(client, "mova_i2va.json", seed=35, image_name="start.png")
    prompt[_node_key(prompt, "MovaSampler")]["inputs"]["latent"] = [_node_key(prompt, "MovaConditioning"), 4]
    videos, _ = _run(client, prompt)
    _check_mp4(client.download(videos[0], tmp_path / "av_latent.mp4"))
