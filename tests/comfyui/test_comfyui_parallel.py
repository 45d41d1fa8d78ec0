"""MOVA Parallel in a real ComfyUI (``--cpu``): the MOVA Sampler and the MOVA Guider on 2 worker processes over gloo
(devices cpu:2) give the one-device latents, with a LoRA and fp8 weights too; Cancel stops every worker and the
next run goes on; a killed worker gives a clear error on the node and ComfyUI stays usable; Unload Models stops the
workers; what cannot run is refused before anything heavy starts. Ulysses runs where yunchang is installed in
ComfyUI's Python (the pack's requirements.txt lists it)."""

from __future__ import annotations

import importlib.util
import json
import signal
import time
import urllib.request

import pytest

from comfy_fixtures import probed_latents
from comfy_integration import (INTEGRATION, STEPS, api_prompt, cancel_during, check_mp4, needs_native, node_key, refusal,
                               run_prompt)
from mova_testing import rel_l2

pytestmark = INTEGRATION
psutil = pytest.importorskip("psutil", reason="psutil (ComfyUI ships it) finds the worker processes")

PARITY = 1e-5
MODES = ["cfg"] + (["ulysses"] if importlib.util.find_spec("yunchang") else [])  # the server runs this Python
PARALLEL = "90"   # the MOVA Parallel node added to the prompts
REFERENCE, PROBE, PROBE_REFERENCE = "91", "92", "93"


def _server(base) -> psutil.Process:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "main.py" in cmdline and str(base) in cmdline:
            return proc
    raise AssertionError(f"no ComfyUI server for {base}")


def _workers(base) -> list[psutil.Process]:
    """The MOVA Parallel workers the session's ComfyUI runs (not those that have exited)."""
    found = []
    for proc in _server(base).children():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and any("worker_main.py" in part for part in proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def _wait_for(condition, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _parallel(prompt: dict, mode: str = "cfg", devices: str = "cpu:2", keep_loaded: bool = True) -> dict:
    """``prompt`` with a MOVA Parallel node feeding the options of its MOVA Sampler or MOVA Guider (and carrying
    the MOVA Sampler Options that were there)."""
    (user,) = [k for k, n in prompt.items() if n["class_type"] in ("MovaSampler", "MovaGuider")]
    inputs = {"devices": devices, "mode": mode, "shard_weights": False, "swap_blocks": 0, "keep_loaded": keep_loaded}
    if "options" in prompt[user]["inputs"]:
        inputs["options"] = prompt[user]["inputs"]["options"]
    prompt[PARALLEL] = {"class_type": "MovaParallel", "inputs": inputs}
    prompt[user]["inputs"]["options"] = [PARALLEL, 0]
    return prompt


def _with_reference(prompt: dict) -> dict:
    """A second MOVA Sampler on one device (the same inputs, the options without MOVA Parallel) and probes of both."""
    sampler = node_key(prompt, "MovaSampler")
    reference = {k: v for k, v in prompt[sampler]["inputs"].items() if k != "options"}
    if "options" in prompt[PARALLEL]["inputs"]:
        reference["options"] = prompt[PARALLEL]["inputs"]["options"]
    prompt[REFERENCE] = {"class_type": "MovaSampler", "inputs": reference}
    prompt[PROBE] = {"class_type": "TestMovaLatentProbe", "inputs": {"video": [sampler, 0], "audio": [sampler, 1]}}
    prompt[PROBE_REFERENCE] = {"class_type": "TestMovaLatentProbe", "inputs": {"video": [REFERENCE, 0],
                                                                              "audio": [REFERENCE, 1]}}
    return prompt


def _long_run(client, seed: int, steps: int = 400) -> dict:
    """The i2va workflow on the workers with many steps (long enough to act in the middle of it)."""
    prompt = _parallel(api_prompt(client, "mova_i2va.json", seed=seed, image_name="start.png"))
    prompt[node_key(prompt, "MovaSampler")]["inputs"]["steps"] = steps
    return prompt


def _check_parity(outputs: dict) -> list[float]:
    errors = [rel_l2(out, ref) for out, ref in zip(probed_latents(outputs, PROBE), probed_latents(outputs, PROBE_REFERENCE))]
    assert all(e <= PARITY for e in errors), errors
    return errors


@pytest.mark.parametrize("mode", MODES)
def test_parallel_workflow_equals_one_device(client, base, tmp_path, mode):
    """The shipped mova_i2va_parallel workflow (devices cpu:2): the same latents as the MOVA Sampler on one device,
    progress to the last step, previews, an MP4 with sound, and the setup on the node."""
    prompt = api_prompt(client, "mova_i2va_parallel.json", seed=71, image_name="start.png")
    parallel = node_key(prompt, "MovaParallel")
    prompt[parallel]["inputs"].update(devices="cpu:2", mode=mode)
    prompt[PARALLEL] = prompt.pop(parallel)
    sampler = node_key(prompt, "MovaSampler")
    prompt[sampler]["inputs"]["options"] = [PARALLEL, 0]
    outputs, previews = {}, []
    videos, progress = run_prompt(client, _with_reference(prompt), outputs, previews)
    print(f"{mode} on 2 processes vs one device, relative L2 (video, audio):", _check_parity(outputs))
    steps = [value for kind, value in progress if kind == "MovaSampler"]
    assert STEPS in steps  # the parallel sampler reached the last step (the reference may come from the cache)
    assert any(int.from_bytes(p[:4], "big") == 1 for p in previews)  # live previews from the workers' latents
    text = outputs[sampler]["text"][0]
    assert "parallel: 2 workers on cpu, cpu" in text
    check_mp4(client.download(videos[0], tmp_path / f"parallel_{mode}.mp4"))
    assert len(_workers(base)) == 2  # keep_loaded: the workers wait for the next run


@needs_native
def test_parallel_native_guider_equals_the_mova_sampler(client):
    """The native path (SamplerCustomAdvanced, euler, MOVA Scheduler official) with the MOVA Guider on the workers:
    the one-device MOVA Sampler's latents."""
    prompt = api_prompt(client, "mova_i2va_native.json", seed=72, image_name="start.png")
    guider, cond = node_key(prompt, "MovaGuider"), node_key(prompt, "MovaConditioning")
    _parallel(prompt, mode=MODES[-1])
    split, inputs = node_key(prompt, "MovaSeparateAVLatent"), prompt[guider]["inputs"]
    prompt |= {
        REFERENCE: {"class_type": "MovaSampler", "inputs": {
            k: inputs[k] for k in ("high_noise_expert", "low_noise_expert", "audio_tower", "conditioning", "cfg",
                                   "shift", "boundary_ratio")} | {"latent": [cond, 1], "seed": 72, "steps": STEPS}},
        PROBE: {"class_type": "TestMovaLatentProbe", "inputs": {"video": [split, 0], "audio": [split, 1]}},
        PROBE_REFERENCE: {"class_type": "TestMovaLatentProbe", "inputs": {"video": [REFERENCE, 0],
                                                                         "audio": [REFERENCE, 1]}},
    }
    outputs = {}
    run_prompt(client, prompt, outputs)
    print("native path on 2 processes vs MOVA Sampler on one device, relative L2:", _check_parity(outputs))


def test_parallel_lora_and_dual_cfg(client):
    """The LoRA workflow (MOVA LoRA Loader on all three parts: the workers merge the same LoRA) with dual CFG's third
    pass, on 2 processes: the one-device latents."""
    prompt = api_prompt(client, "mova_i2va_lora.json", seed=73, image_name="start.png")
    prompt["94"] = {"class_type": "MovaSamplerOptions", "inputs": {
        "bridge_cfg": 3.5, "audio_cfg": 0.0, "audio_shift": 0.0, "cfg_cutoff": 1.0, "cache_threshold": 0.0,
        "attention": "auto", "compile": "off", "fp8_compute": "auto", "given_modality": "renoised"}}
    prompt[node_key(prompt, "MovaSampler")]["inputs"]["options"] = ["94", 0]
    outputs = {}
    run_prompt(client, _with_reference(_parallel(prompt)), outputs)
    print("LoRA + dual CFG on 2 processes vs one device, relative L2:", _check_parity(outputs))


def test_parallel_fp8_weights(client):
    """Experts loaded as fp8_e4m3fn: the workers hold the same fp8 weights and give the one-device latents."""
    prompt = api_prompt(client, "mova_i2va.json", seed=74, image_name="start.png")
    for node in prompt.values():
        if node["class_type"] in ("MovaVideoExpertLoader", "MovaAudioTowerLoader"):
            node["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    outputs = {}
    run_prompt(client, _with_reference(_parallel(prompt)), outputs)
    print("fp8 on 2 processes vs one device, relative L2:", _check_parity(outputs))


def test_cancel_stops_every_worker_and_comfyui_goes_on(client, base):
    prompt = _long_run(client, seed=75)
    sampler = node_key(prompt, "MovaSampler")
    cancel_during(client, prompt, lambda data: data.get("node") == sampler and data.get("value", 0) >= 2,
                  "the parallel MOVA Sampler sent no progress")
    workers = _workers(base)
    assert len(workers) == 2  # stopped between steps together, still loaded for the next run
    assert _wait_for(lambda: all(p.cpu_percent(interval=0.5) < 50 for p in workers), 30)  # not sampling on
    outputs = {}
    run_prompt(client, _parallel(api_prompt(client, "mova_i2va.json", seed=75, image_name="start.png")), outputs)
    assert [p.pid for p in _workers(base)] == [p.pid for p in workers]  # the same workers ran it


def test_a_killed_worker_is_a_clear_error_and_comfyui_goes_on(client, base):
    """A worker killed in the middle of a run (SIGKILL, as the out-of-memory killer does): the node fails with a
    message naming the worker, the others are stopped, and the next run starts new workers and succeeds."""
    from comfy_client import ServerError
    from run_workflow import wait
    prompt = _long_run(client, seed=76)
    sampler = node_key(prompt, "MovaSampler")
    ws = client.websocket()
    try:
        prompt_id = client.queue(prompt)
        while True:
            message = ws.receive(timeout=180)
            assert message is not None, "the parallel MOVA Sampler sent no progress"
            data = message.get("data", {})
            if message["type"] == "progress" and data.get("node") == sampler and data.get("value", 0) >= 2:
                break
        victims = _workers(base)
        victims[1].send_signal(signal.SIGKILL)
        with pytest.raises(ServerError) as failure:
            wait(client, ws, prompt_id, prompt, timeout=120)
    finally:
        ws.close()
    message = str(failure.value)
    assert "MovaSampler failed" in message and "worker 1 (cpu) stopped (signal SIGKILL)" in message
    assert "the next run starts new workers" in message
    assert _wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in victims))
    outputs = {}
    run_prompt(client, _parallel(api_prompt(client, "mova_i2va.json", seed=76, image_name="start.png")), outputs)
    assert len(_workers(base)) == 2 and not {p.pid for p in _workers(base)} & {p.pid for p in victims}


def test_unload_models_stops_the_workers(client, base):
    run_prompt(client, _parallel(api_prompt(client, "mova_i2va.json", seed=77, image_name="start.png")))
    workers = _workers(base)
    assert len(workers) == 2
    log_before = (base / "server.log").read_text()
    request = urllib.request.Request(client.base + "/free", data=json.dumps({"unload_models": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()
    assert _wait_for(lambda: not _workers(base)), "the workers outlived ComfyUI's Unload Models"
    assert "stopping the workers (ComfyUI unloaded the models)" in (base / "server.log").read_text()
    # ComfyUI goes on: its prompt worker survived the unload (on v0.33 it once died of the tracker freed in the
    # middle of the unload, and every later prompt waited forever); a parallel run starts new workers
    run_prompt(client, _parallel(api_prompt(client, "mova_i2va.json", seed=79, image_name="start.png")))
    assert len(_workers(base)) == 2 and not {p.pid for p in _workers(base)} & {p.pid for p in workers}
    after = (base / "server.log").read_text()[len(log_before):]
    assert "Exception in thread" not in after and "Exception ignored" not in after, after[-3000:]


def test_what_cannot_run_is_refused_before_the_workers_start(client, base):
    """No GPU for devices 0,1 (at queue time); more Ulysses processes than the video expert's heads allow and three
    CFG processes without dual CFG (at run time, before any worker starts)."""
    prompt = _parallel(api_prompt(client, "mova_i2va.json", seed=78, image_name="start.png"), devices="0,1")
    details = refusal(client, prompt)[PARALLEL]
    assert details and all("ComfyUI sees no GPU" in d and "cpu:2" in d for d in details), details
    before = {p.pid for p in _workers(base)}
    from comfy_client import ServerError
    from run_workflow import wait
    for mode, devices, expected in (("ulysses", "cpu:3", "attention heads"), ("cfg", "cpu:3", "dual CFG")):
        prompt = _parallel(api_prompt(client, "mova_i2va.json", seed=78, image_name="start.png"), mode=mode,
                           devices=devices)
        ws = client.websocket()
        try:
            with pytest.raises(ServerError, match=expected):
                wait(client, ws, client.queue(prompt), prompt, timeout=120)
        finally:
            ws.close()
    assert {p.pid for p in _workers(base)} == before  # nothing started, nothing stopped
