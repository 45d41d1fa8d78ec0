"""MOVA inside a real ComfyUI on a GPU: the shipped i2va workflows to MP4s, with the log lines that show which
model patcher, ops and attention ComfyUI used, s/step and peak memory (a script, not a test).

    # on a GPU machine, ComfyUI v0.8.0 from a carried archive (see benchmarks/GPU_RUN.md)
    python benchmarks/comfyui_gpu.py --comfyui-archive .gpu_carry/comfyui-v0.8.0.tar.gz --work /tmp/comfy \\
        --out $OUT --json $OUT/comfyui_gpu.json
    # dry run of the same code on the CPU (ComfyUI started with --cpu, tiny sizes)
    python benchmarks/comfyui_gpu.py --comfyui /path/to/ComfyUI --cpu --size tiny --work /tmp/comfy_dry

Lays out ComfyUI (from ``--comfyui`` or by unpacking ``--comfyui-archive``), makes a base folder with this pack
in custom_nodes, a random MOVA release (``--size mid``: video dim 512 x 8 layers, audio 256 x 6, the 48 kHz
codec; ``tiny``: the test release's sizes), a random Wan 2.1 VAE written by ComfyUI's own class and a toy UMT5
text encoder node (tests/support/comfy_text_nodes.py: UMT5-XXL has no small form), starts ``main.py`` without
``--cpu`` (with it for ``--cpu``), and runs ``mova_i2va.json`` (the pack's sampler) and ``mova_i2va_native.json``
(ComfyUI's SamplerCustomAdvanced with the MOVA guider) at the given size. Each run's MP4 is checked with
PyAV (frames, size, an audio stream). Python for ComfyUI: this one (``--python`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

PACK = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK))
sys.path.insert(0, str(PACK / "scripts"))
sys.path.insert(0, str(PACK / "tests" / "support"))

WORKFLOWS = ("mova_i2va.json", "mova_i2va_native.json")
# log lines worth keeping: how ComfyUI loaded and patched the model, its ops, its attention, memory mode
LOG_WORDS = re.compile(r"MOVA|mova|patcher|ModelPatcher|ops|attention|Attention|VRAM|vram|lowvram|loaded|"
                       r"dtype|manual cast|fp8|Device|device|compile|it/s|s/it", re.IGNORECASE)
STEP_RATE = re.compile(r"(\d+)/(\d+) \[[^\]]*?(\d+(?:\.\d+)?)(s/it|it/s)\]")


def _log(text: str) -> None:
    print(text, flush=True)


def lay_out_comfyui(args) -> Path:
    """The ComfyUI checkout to run: ``--comfyui``, or ``--comfyui-archive`` unpacked once into --work."""
    if args.comfyui:
        root = Path(args.comfyui)
    else:
        root = Path(args.work) / "ComfyUI"
        if not (root / "main.py").is_file():
            root.mkdir(parents=True, exist_ok=True)
            with tarfile.open(args.comfyui_archive) as archive:
                archive.extractall(root, filter="data")
            inner = [p for p in root.iterdir() if p.is_dir() and (p / "main.py").is_file()]
            if not (root / "main.py").is_file() and len(inner) == 1:
                root = inner[0]
    if not (root / "main.py").is_file():
        raise SystemExit(f"no ComfyUI at {root} (main.py missing): give --comfyui DIR or --comfyui-archive FILE")
    return root


def write_release(models: Path, size: str) -> dict:
    """A random MOVA release in the Hugging Face layout: transformer parts in diffusion_models/MOVA-360p, the
    audio codec in vae/MOVA-360p. Returns the sizes written."""
    import torch
    from safetensors.torch import save_file

    from mova_model.networks.bridge import DualTowerBridge
    from mova_model.configs import config_to_dict
    from mova_model.networks.dac import DAC
    from mova_model.networks.dit import WanDiT

    if size == "mid":
        from memory_modes import mid_config
        c = mid_config()
        parts = {"video_dit": (WanDiT, c.video), "video_dit_2": (WanDiT, c.video), "audio_dit": (WanDiT, c.audio),
                 "dual_tower_bridge": (DualTowerBridge, c.bridge), "audio_vae": (DAC, c.dac)}
    else:
        import mova_pack  # noqa: F401  (imports the pack as comfyui_mova, as tests/support/tiny_release.py expects)
        from tiny_release import FOLDERS
        parts = FOLDERS
    written = {}
    for seed, (name, (cls, config)) in enumerate(parts.items()):
        folder = models / ("vae" if name == "audio_vae" else "diffusion_models") / "MOVA-360p" / name
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        model = cls(config)
        with torch.no_grad():
            for key, p in model.named_parameters():
                if key.endswith("modulation"):  # zero in a fresh network: give the AdaLN some signal
                    p.normal_(0.0, 0.1)
        state = {k: v.detach().to(torch.bfloat16 if name != "audio_vae" else torch.float32).contiguous()
                 for k, v in model.state_dict().items()}
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
        (folder / "config.json").write_text(json.dumps(config_to_dict(config), indent=1))
        written[name] = round(sum(t.numel() * t.element_size() for t in state.values()) / 2 ** 20, 1)
    for kind in ("diffusion_models", "vae"):
        root = models / kind / "MOVA-360p"
        (root / "model_index.json").write_text(json.dumps({"_class_name": "MOVA", "boundary_ratio": 0.9}))
        (root / "scheduler").mkdir(exist_ok=True)
        (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
            {"_class_name": "FlowMatchPairScheduler", "num_train_timesteps": 1000, "shift": 5.0, "sigma_max": 1.0,
             "sigma_min": 0.0, "extra_one_step": True}))
    return written


def make_base(args, comfyui: Path) -> Path:
    from comfy_fixtures import WAN_VAE

    base = Path(args.work) / "base"
    if base.exists():
        shutil.rmtree(base)
    (base / "custom_nodes").mkdir(parents=True)
    (base / "input").mkdir()
    (base / "custom_nodes" / "comfyui-mova").symlink_to(PACK, target_is_directory=True)
    shutil.copyfile(PACK / "tests" / "comfy_text_nodes.py", base / "custom_nodes" / "test_text_nodes.py")
    example = comfyui / "input" / "example.png"
    if example.is_file():
        shutil.copyfile(example, base / "input" / "example.png")
    else:
        from PIL import Image
        Image.new("RGB", (args.width, args.height), (90, 140, 200)).save(base / "input" / "example.png")
    (base / "front").mkdir()
    (base / "front" / "index.html").write_text("<!doctype html><title>ComfyUI (API only)</title>")
    models = base / "models"
    t0 = time.perf_counter()
    sizes_mib = write_release(models, args.size)
    vae = models / "vae" / "wan_2.1_vae.safetensors"
    subprocess.run([args.python, "-c", WAN_VAE, str(vae)], cwd=comfyui, check=True, capture_output=True)
    _log(f"base folder {base}: MOVA release ({args.size}) {sizes_mib} MiB, Wan VAE; {time.perf_counter() - t0:.1f} s")
    return base


class MemoryWatch:
    """Peak memory of the server while a prompt runs: GPU memory of its process (nvidia-smi), else host RSS."""

    def __init__(self, pid: int, gpu: bool):
        self.pid, self.gpu, self.peak_mib, self._stop = pid, gpu, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        if self.gpu:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            return sum(float(m) for p, m in (line.split(",") for line in out.strip().splitlines() if "," in line)
                       if int(p) == self.pid)
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak_mib = max(self.peak_mib, self._sample())
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)


def start_server(args, comfyui: Path, base: Path):
    from comfy_server import free_port

    port = free_port()
    command = [args.python, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
               "--disable-auto-launch", "--database-url", "sqlite:///:memory:", "--preview-method", "none"]
    command += ["--cpu"] if args.cpu else []
    if subprocess.run([args.python, "-c", "import comfyui_frontend_package"], capture_output=True).returncode:
        command += ["--front-end-root", str(base / "front")]  # no frontend package: the API needs none
    command += args.comfy_arg
    log = open(base / "server.log", "w")
    process = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT,
                               env=os.environ | {"PYTHONUNBUFFERED": "1"})
    return process, f"http://127.0.0.1:{port}", log, command


def wait_ready(client, process, base: Path, timeout: float) -> float:
    from comfy_client import ServerError

    t0 = time.monotonic()
    while True:
        try:
            client.object_info()
            return time.monotonic() - t0
        except ServerError:
            if process.poll() is not None or time.monotonic() - t0 > timeout:
                raise SystemExit("ComfyUI did not start:\n" + (base / "server.log").read_text()[-4000:])
            time.sleep(1)


def run_workflow(args, client, process, base: Path, name: str, out: Path) -> dict:
    from run_workflow import finished_history, wait
    from workflow_api import missing_models, set_parameters, ui_to_api, video_outputs

    info = client.object_info()
    prompt = ui_to_api(json.loads((PACK / "example_workflows" / name).read_text()), info)
    set_parameters(prompt, width=args.width, height=args.height, frames=args.frames, steps=args.steps, seed=7,
                   image_name="example.png")
    for node in prompt.values():
        if node["class_type"] == "CLIPLoader":  # UMT5-XXL (11 GB) -> the toy UMT5 of the tests, same interface
            node["class_type"], node["inputs"] = "TestTinyUMT5Loader", {"kind": "umt5xxl"}
        if node["class_type"] == "MovaSamplerOptions" and args.compile != "off":
            node["inputs"]["compile"] = args.compile
    problems = missing_models(prompt, info)
    if problems:
        return {"workflow": name, "error": "missing models: " + "; ".join(problems)}
    log_start = (base / "server.log").stat().st_size
    ws = client.websocket()
    steps: list[tuple[float, int]] = []  # (time, step) of the sampler's progress messages
    receive = ws.receive

    def spy(timeout=None):
        message = receive(timeout)
        if message and message.get("type") == "progress":
            kind = prompt.get(message["data"].get("node"), {}).get("class_type", "")
            if kind in ("MovaSampler", "SamplerCustomAdvanced"):
                steps.append((time.perf_counter(), int(message["data"]["value"])))
        return message

    ws.receive = spy
    t0 = time.perf_counter()
    try:
        with MemoryWatch(process.pid, gpu=not args.cpu) as memory:
            prompt_id = client.queue(prompt)
            wait(client, ws, prompt_id, prompt, timeout=args.timeout)
    finally:
        ws.close()
    seconds = time.perf_counter() - t0
    history = finished_history(client, prompt_id)
    videos = video_outputs(history, prompt)
    row = {"workflow": name, "seconds": round(seconds, 2), "peak_memory_mib": round(memory.peak_mib, 1),
           "memory_kind": "host RSS" if args.cpu else "GPU (nvidia-smi, server process)"}
    if not videos:
        row["error"] = "no video saved"
        return row
    target = client.download(videos[0], out / name.replace(".json", ".mp4"))
    row["mp4"] = str(target)
    row.update(check_video(target))
    text = (base / "server.log").read_text(errors="replace")[log_start:]
    if len(steps) >= 2:  # from the first step's end to the last's: the first step's compile/load left out
        row["s_per_step"] = round((steps[-1][0] - steps[0][0]) / (steps[-1][1] - steps[0][1]), 3)
        row["first_step_s"] = round(steps[0][0] - t0, 2)
        row["steps"] = steps[-1][1]
    rates = [(float(m.group(3)), m.group(4)) for m in STEP_RATE.finditer(text)]
    if rates:
        value, unit = rates[-1]
        row["s_per_step_tqdm"] = round(value if unit == "s/it" else 1 / value, 3)
    row["log"] = [line for line in text.splitlines() if LOG_WORDS.search(line)][-40:]
    return row


def check_video(path: Path) -> dict:
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        audio = [s for s in container.streams if s.type == "audio"]
        return {"frames": frames, "size": [video.codec_context.width, video.codec_context.height],
                "audio_streams": len(audio), "audio_rate": audio[0].codec_context.sample_rate if audio else None}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", help="a ComfyUI checkout to run")
    parser.add_argument("--comfyui-archive", help="a .tar.gz of a ComfyUI checkout, unpacked into --work")
    parser.add_argument("--work", default="/tmp/mova_comfyui_gpu", help="where the base folder (and ComfyUI) go")
    parser.add_argument("--out", default=None, help="where the MP4s go (default: --work)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs ComfyUI")
    parser.add_argument("--cpu", action="store_true", help="dry run: ComfyUI with --cpu")
    parser.add_argument("--size", choices=("mid", "tiny"), default="mid", help="the random MOVA release's size")
    parser.add_argument("--width", type=int, default=None, help="default 320 (--size tiny: 32)")
    parser.add_argument("--height", type=int, default=None, help="default 176 (--size tiny: 32)")
    parser.add_argument("--frames", type=int, default=None, help="default 25 (--size tiny: 9)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 8; --size tiny: 2)")
    parser.add_argument("--compile", choices=("off", "kernels", "blocks"), default="off",
                        help="the MOVA sampler's compile option in mova_i2va.json")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per workflow")
    parser.add_argument("--budget-s", type=float, default=240, help="the second workflow is skipped past this")
    parser.add_argument("--comfy-arg", action="append", default=[], help="one more argument for main.py")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    tiny = args.size == "tiny"
    args.width = args.width or (32 if tiny else 320)
    args.height = args.height or (32 if tiny else 176)
    args.frames = args.frames or (9 if tiny else 25)
    args.steps = args.steps or (2 if tiny else 8)
    if not args.comfyui and not args.comfyui_archive:
        parser.error("give --comfyui DIR or --comfyui-archive FILE")
    start = time.perf_counter()
    out = Path(args.out or args.work)
    out.mkdir(parents=True, exist_ok=True)
    comfyui = lay_out_comfyui(args)
    base = make_base(args, comfyui)
    from comfy_client import ComfyClient

    process, url, log, command = start_server(args, comfyui, base)
    record = {"comfyui": str(comfyui), "command": " ".join(command), "size": args.size, "width": args.width,
              "height": args.height, "frames": args.frames, "steps": args.steps, "compile": args.compile, "runs": []}
    try:
        client = ComfyClient(url, timeout=120)
        record["startup_s"] = round(wait_ready(client, process, base, timeout=180), 1)
        _log(f"ComfyUI up at {url} in {record['startup_s']} s ({' '.join(command[1:])})")
        for name in WORKFLOWS:
            if record["runs"] and time.perf_counter() - start > args.budget_s:
                record["runs"].append({"workflow": name, "skipped": f"budget {args.budget_s} s spent"})
                continue
            try:
                row = run_workflow(args, client, process, base, name, out)
            except Exception as exc:  # a failed run is a finding: keep the log tail
                row = {"workflow": name, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            record["runs"].append(row)
            _log(json.dumps({k: v for k, v in row.items() if k != "log"}))
            for line in row.get("log", [])[-12:]:
                _log(f"    | {line[:200]}")
            if args.json:
                Path(args.json).write_text(json.dumps(record, indent=1))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        startup = (base / "server.log").read_text(errors="replace").splitlines()
        record["startup_log"] = [line for line in startup[:80] if LOG_WORDS.search(line)]
        shutil.copyfile(base / "server.log", out / "comfyui_server.log")
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=1))
    ok = [r for r in record["runs"] if "mp4" in r]
    _log(f"{len(ok)}/{len(WORKFLOWS)} workflows made an MP4; " + "; ".join(
        f"{r['workflow']}: {r.get('s_per_step', '?')} s/step, {r['seconds']} s, peak {r['peak_memory_mib']} MiB"
        for r in ok))
    return record


if __name__ == "__main__":
    main()
