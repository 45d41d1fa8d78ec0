"""A real ComfyUI server for the tests that need one (the integration and browser tests): the base folder
with this pack linked in, and ``main.py --cpu`` started on a free port of 127.0.0.1 (COMFYUI_PATH, run with
ComfyUI's Python)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

COMFYUI = os.environ.get("COMFYUI_PATH")
PACK = Path(__file__).resolve().parents[2]
SCRIPTS = PACK / "scripts"
PACK_FOLDER = "comfyui-mova"  # the folder name users clone into (the template browser lists it under this name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_base(root: Path) -> Path:
    """A ComfyUI base directory holding this pack (linked) in custom_nodes; returns ``root``."""
    (root / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (root / "custom_nodes" / PACK_FOLDER).symlink_to(PACK, target_is_directory=True)
    (root / "input").mkdir(exist_ok=True)
    return root


def write_wan_vae(path: Path) -> None:
    """A random Wan 2.1 VAE in ComfyUI's format (written by ComfyUI's own class, in COMFYUI_PATH)."""
    from comfy_fixtures import WAN_VAE
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", WAN_VAE, str(path)], cwd=COMFYUI, check=True, capture_output=True)


@contextlib.contextmanager
def comfy_server(base: Path, env: dict | None = None, timeout: float = 300, comfyui: str | None = None,
                 python: str | None = None):
    """ComfyUI (``comfyui``, default COMFYUI_PATH, run by ``python``, default this one) serving ``base`` on a free
    port until the block ends; yields its URL. The log is base/server.log."""
    comfyui = comfyui or COMFYUI
    if python is None and importlib.util.find_spec("aiohttp") is None:
        raise RuntimeError("COMFYUI_PATH is set but this Python lacks ComfyUI's requirements (aiohttp): "
                           "run pytest with the Python of ComfyUI's environment")
    port = free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen(
        [python or sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
         str(base), "--disable-auto-launch", "--preview-method", "auto", "--database-url", "sqlite:///:memory:"],
        cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, env=os.environ | (env or {}))
    url = f"http://127.0.0.1:{port}"
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    from comfy_client import ComfyClient, ServerError
    client = ComfyClient(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.object_info()
                break
            except ServerError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ComfyUI did not start:\n" + (base / "server.log").read_text()[-4000:])
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def copy_example_image(base: Path, comfyui: str | None = None) -> None:
    """ComfyUI's own input/example.png (the example workflows' first frame) into the base's input folder."""
    source = Path(comfyui or COMFYUI) / "input" / "example.png"
    if source.is_file():
        shutil.copyfile(source, base / "input" / "example.png")


MEDIA_NODES = {"LoadImage": "image", "LoadAudio": "audio", "LoadVideo": "file"}


def provide_inputs(base: Path, workflows, comfyui: str | None = None) -> list[str]:
    """The input files the workflows' Load Image / Load Audio / Load Video nodes name, made in base/input when
    they are not there: ComfyUI's example.png, else a small picture, a one-second tone or a short clip with sound.
    Returns the names made."""
    import json
    made = []
    for path in workflows:
        workflow = json.loads(Path(path).read_text(encoding="utf-8"))
        for node in workflow["nodes"]:
            if node["type"] not in MEDIA_NODES or not node.get("widgets_values"):
                continue
            name = node["widgets_values"][0]
            target = base / "input" / name
            if not isinstance(name, str) or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if name == "example.png":
                copy_example_image(base, comfyui)
            elif node["type"] == "LoadImage":
                from PIL import Image
                Image.new("RGB", (64, 48), (90, 140, 200)).save(target)
            elif node["type"] == "LoadAudio":
                _write_tone(target)
            else:
                from clip_files import write_clip
                write_clip(target, 9, 24.0, 64, 48, caption=None)
            made.append(name)
    return made


AUDIO_CODECS = {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "mp3", ".ogg": "libvorbis", ".opus": "libopus",
                ".m4a": "aac", ".aac": "aac"}


def _write_tone(path: Path, seconds: float = 1.0, rate: int = 16000) -> None:
    """A one-second 440 Hz tone in the format the file name asks for (PyAV)."""
    import av
    import numpy as np
    codec = AUDIO_CODECS.get(path.suffix.lower(), "aac")
    with av.open(str(path), "w", format="mp4" if path.suffix.lower() in (".m4a", ".aac") else None) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
