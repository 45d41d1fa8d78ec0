"""End to end in a real ComfyUI (COMFYUI_PATH = a ComfyUI checkout; run pytest with ComfyUI's Python).

Starts ``main.py --cpu`` on 127.0.0.1 with a temporary base directory holding this pack, tiny random models
written here (a MOVA release, a random full-size Wan 2.1 VAE in ComfyUI's format, MOVA LoRAs), a test-only
text node (UMT5-XXL has no tiny form ComfyUI can load) and a weight probe node (tests/comfy_fixtures.py),
then runs the shipped workflows through the headless client and checks the MP4s, and checks ComfyUI's
application of MOVA LoRA patches weight by weight.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from comfy_fixtures import (CONCAT_PROBE_NODE, PROBE_NODE, STRENGTHS, TEXT_NODE, VIDEO_FRAMES, VIDEO_SIZE, WAN_VAE,
                            fitted_speech, lora_delta, lora_node, loaders, original, probe_node, probed, read_audio,
                            write_mode_media, write_test_loras)
from comfyui_mova.nodes import spec
from fake_llm_server import TEXT_MODEL, VISION_MODEL, FakeLLMServer, caption_for

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI, reason="COMFYUI_PATH is not set (point it at a ComfyUI checkout to run "
                       "the integration tests, with ComfyUI's Python)"),
]

PACK = Path(__file__).resolve().parents[1]
SCRIPTS = PACK / "scripts"
WIDTH, HEIGHT, FRAMES, FPS, STEPS = 32, 32, 25, 24.0, 4
# The ComfyUI server gets this key in its environment, for MOVA Prompt Enhance's api_key_env.
LLM_KEY_ENV, LLM_KEY = "MOVA_TEST_LLM_KEY", "sk-test-Zq8Xw2Lm4Np6Rt0Vb1Yc3Hd5"

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """ComfyUI base directory: the pack, the test text node, tiny models, a start image."""
    from PIL import Image
    from tiny_release import write_release

    root = tmp_path_factory.mktemp("comfy_base")
    (root / "custom_nodes").mkdir()
    (root / "custom_nodes" / "comfyui-mova").symlink_to(PACK, target_is_directory=True)
    (root / "custom_nodes" / "test_text_states.py").write_text(TEXT_NODE)
    (root / "custom_nodes" / "test_weight_probe.py").write_text(PROBE_NODE)
    (root / "custom_nodes" / "test_concat_probe.py").write_text(CONCAT_PROBE_NODE)
    models = root / "models"
    write_release(models / "diffusion_models" / "MOVA-360p",
                  ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"))
    write_release(models / "vae" / "MOVA-360p", ("audio_vae",))
    vae_file = models / "vae" / "wan_2.1_vae.safetensors"
    subprocess.run([sys.executable, "-c", WAN_VAE, str(vae_file)], cwd=COMFYUI, check=True, capture_output=True)
    write_test_loras(models / "loras")
    (root / "input").mkdir()
    Image.new("RGB", (48, 40), (200, 120, 40)).save(root / "input" / "start.png")
    write_mode_media(root / "input")
    return root


@pytest.fixture(scope="module")
def server(base):
    """A ComfyUI server on a free port (stopped after the module); yields its URL."""
    import importlib.util
    if importlib.util.find_spec("aiohttp") is None:
        pytest.fail("COMFYUI_PATH is set but this Python lacks ComfyUI's requirements (aiohttp): "
                    "run pytest with the Python of ComfyUI's environment")
    port = _free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
         str(base), "--disable-auto-launch", "--preview-method", "auto", "--database-url", "sqlite:///:memory:"],
        cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {LLM_KEY_ENV: LLM_KEY})
    url = f"http://127.0.0.1:{port}"
    sys.path.insert(0, str(SCRIPTS))
    from comfy_client import ComfyClient, ServerError
    client = ComfyClient(url)
    deadline = time.monotonic() + 300
    while True:
        try:
            client.object_info()
            break
        except ServerError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("ComfyUI did not start:\n" + (base / "server.log").read_text()[-4000:])
            time.sleep(1)
    yield url
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


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
    loader = combo_options(*info["MovaVideoExpertLoader"]["input"]["required"]["model_name"])
    assert {"MOVA-360p/video_dit", "MOVA-360p/video_dit_2", "MOVA-360p/audio_dit"} <= set(loader)
    assert combo_options(*info["MovaAudioVAELoader"]["input"]["required"]["vae_name"]) == \
        ["MOVA-360p/audio_vae", "wan_2.1_vae.safetensors"]


def test_workflows_served_as_templates(client):
    """ComfyUI's template browser lists the shipped workflows under the pack and serves them unchanged."""
    assert sorted(client.get_json("/workflow_templates")["comfyui-mova"]) == \
        ["mova_a2v", "mova_extend", "mova_flf2va", "mova_i2va", "mova_i2va_dual_cfg", "mova_i2va_enhanced",
         "mova_i2va_lora", "mova_t2va", "mova_v2a"]
    served = client.get_json("/api/workflow_templates/comfyui-mova/mova_i2va.json")
    assert served == json.loads((PACK / "workflows" / "mova_i2va.json").read_text())


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
                          f"http://127.0.0.1:{_free_port()}", "--prompt", "x", "--output", str(tmp_path / "x.mp4")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "cannot reach ComfyUI" in run.stderr and "start it first" in run.stderr


def _prompt(client, workflow: str, **params):
    """The shipped workflow as an API prompt, with the test text node in place of the UMT5 encoder."""
    from workflow_api import missing_models, set_parameters, ui_to_api
    info = client.object_info()
    prompt = ui_to_api(json.loads((PACK / "workflows" / workflow).read_text()), info)
    set_parameters(prompt, width=WIDTH, height=HEIGHT, frames=FRAMES, steps=STEPS, **params)
    for key in [k for k, n in prompt.items() if n["class_type"] == "CLIPLoader"]:
        del prompt[key]
    for node in prompt.values():
        if node["class_type"] == "CLIPTextEncode":
            node["class_type"] = "TestRandomTextStates"
            del node["inputs"]["clip"]
    assert missing_models(prompt, info) == []
    return prompt


def _run(client, prompt, outputs: dict | None = None):
    """(SaveVideo files, sampler progress) of one prompt run; ``outputs`` receives every node's UI output."""
    from run_workflow import finished_history, wait
    from workflow_api import video_outputs
    ws = client.websocket()
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
    videos, progress = _run(client, _prompt(client, "mova_i2va.json", seed=3, image_name=name))
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


def test_cancel_stops_the_sampler(client):
    """Cancel (POST /interrupt) during sampling stops the MOVA Sampler between steps."""
    from comfy_client import ServerError
    from run_workflow import wait
    prompt = _prompt(client, "mova_t2va.json", seed=7)
    next(n for n in prompt.values() if n["class_type"] == "MovaSampler")["inputs"]["steps"] = 1000
    ws = client.websocket()
    try:
        prompt_id = client.queue(prompt)
        steps = []
        while not steps:
            message = ws.receive(timeout=120)
            assert message is not None, "no progress from the sampler"
            data = message.get("data", {})
            if message["type"] == "progress" and prompt.get(data.get("node"), {}).get("class_type") == "MovaSampler":
                steps.append(data["value"])
        client.cancel(prompt_id)
        with pytest.raises(ServerError, match="cancelled"):
            wait(client, ws, prompt_id, prompt, timeout=120)
    finally:
        ws.close()
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
    """Scaled-fp8 experts: ComfyUI dequantises, adds the LoRA, requantises with the weight's own scale (stays
    fp8, so the range cannot grow: |W'| <= max|W|, README says so); unplugging is exact."""
    factors = write_test_loras(tmp_path / "loras")
    strengths = dict.fromkeys(STRENGTHS, 0.5)  # a small update, as real LoRAs make: little is clipped
    plain = loaders("fp8_e4m3fn") | {"30": probe_node(["1", 0], ["3", 0])}
    before, patched, after = {}, {}, {}
    _run(client, plain, before)
    _run(client, loaders("fp8_e4m3fn") | {"10": lora_node(None, "my_mova_lora/lora_weights.pt", strengths),
                                          "20": probe_node(["10", 0], ["10", 2])}, patched)
    _run(client, plain, after)
    applied = [("my_mova_lora/lora_weights.pt", strengths)]
    for entry, (dtype, w0) in probed(before, "30").items():
        dtype1, w1 = probed(patched, "20")[entry]
        assert dtype == dtype1 == "torch.float8_e4m3fn", entry
        delta = lora_delta(factors, applied, entry, "video_dit")
        if delta.abs().max() > 0:
            assert (w1 - (w0 + delta)).norm() < 0.1 * (w0 + delta).norm(), entry  # fp8 rounding
            assert torch.cosine_similarity(w1 - w0, delta, dim=0) > 0.8, entry  # the change is the LoRA
        assert w1.abs().max() <= w0.abs().max(), entry
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
    assert sampler not in outputs  # no caching, nothing to report
    next(n for n in prompt.values() if n["class_type"] == "MovaSamplerOptions")["inputs"]["cache_threshold"] = 0.5
    prompt[sampler]["inputs"]["steps"] = 10
    _run(client, prompt, outputs)
    assert re.fullmatch(r"step caching skipped [1-9] of 10 steps \(\d+%\)", outputs[sampler]["text"][0])
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
    positive = next(n for n in prompt.values() if n["class_type"] == "TestRandomTextStates"
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
    assert LLM_KEY not in (PACK / "workflows" / "mova_i2va_enhanced.json").read_text()
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
    prompt["2"]["inputs"]["base_url"] = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(ServerError, match="cannot reach the language model server at http://127.0.0.1:.*ollama serve"):
        _run(client, prompt)


# --- beyond image-to-video: first + last frame, sound -> video, video -> audio, longer clips ---------------------

RATE = 16000  # the tiny release's audio codec (tests/tiny_release.py)


def _node_key(prompt: dict, class_type: str) -> str:
    (key,) = [k for k, n in prompt.items() if n["class_type"] == class_type]
    return key


def test_first_last_frame_condition_equals_comfyui_wan_node(client):
    """The same VAE and pictures: MOVA Conditioning's condition equals what ComfyUI's WanFirstLastFrameToVideo
    makes for a Wan 2.2 I2V model (its concat_latent_image + concat_mask through the model's concat_cond)."""
    text = lambda words: {"class_type": "TestRandomTextStates", "inputs": {"text": words}}  # noqa: E731
    size = {"width": WIDTH, "height": HEIGHT, "length": FRAMES}
    prompt = {
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
