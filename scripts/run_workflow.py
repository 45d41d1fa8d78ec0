"""Run a shipped MOVA workflow on a running ComfyUI server and save the MP4.

    python scripts/run_workflow.py --image face.png --prompt "..." --output out.mp4
    python scripts/run_workflow.py --prompt "..." --output out.mp4          # text only (white first frame)
    python scripts/run_workflow.py --image face.png --audio speech.wav --prompt "..." --output out.mp4
    python scripts/run_workflow.py --video clip.mp4 --prompt "..." --output out.mp4

Submits example_workflows/mova_i2va.json (with --image), mova_flf2va.json (with --end-image), mova_a2v.json (with
--audio), mova_v2a.json (with --video) or mova_t2va.json over ComfyUI's HTTP API, shows progress
from its websocket, and downloads the video. Refuses before queueing when the server is down or a
model file is missing. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from comfy_client import ComfyClient, ServerError  # noqa: E402
from workflow_api import WorkflowError, missing_models, set_parameters, ui_to_api, video_outputs  # noqa: E402

WORKFLOWS = HERE.parent / "example_workflows"
# Loader nodes whose file the runner uploads, and the input that names it.
UPLOADED = {"LoadImage": "image", "LoadAudio": "audio", "LoadVideo": "file"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address (default %(default)s)")
    p.add_argument("--workflow", type=Path, help="UI-format workflow (default: mova_i2va.json with --image, "
                   "else mova_t2va.json)")
    p.add_argument("--image", type=Path, help="first frame (png/jpg); omit for text-only generation")
    p.add_argument("--end-image", type=Path, help="last frame (first + last frame); uses mova_flf2va.json, with "
                   "--image")
    p.add_argument("--audio", type=Path, help="a sound for the video to follow (speech -> lip sync); uses "
                   "mova_a2v.json, with --image")
    p.add_argument("--video", type=Path, help="a video to write a soundtrack for; uses mova_v2a.json")
    p.add_argument("--prompt", help="the prompt (default: the workflow's); with mova_i2va_enhanced.json the idea "
                   "that MOVA Prompt Enhance turns into the caption")
    p.add_argument("--negative", help="the negative prompt (default: the workflow's)")
    p.add_argument("--seed", type=int)
    p.add_argument("--width", type=int, help="multiple of 16 (640 for 360p)")
    p.add_argument("--height", type=int, help="multiple of 16 (352 for 360p)")
    p.add_argument("--frames", type=int, help="4k+1 frames (193 = about 8 s at 24 fps)")
    p.add_argument("--steps", type=int, help="denoising steps (50 official, 25 faster)")
    p.add_argument("--output", type=Path, required=True, help="where to save the MP4")
    p.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (0: never)")
    return p.parse_args(argv)


def build_prompt(args, object_info: dict) -> tuple[dict, set]:
    """The API prompt with the run's parameters, and the inputs the upload fills in."""
    default = ("mova_v2a.json" if args.video else "mova_a2v.json" if args.audio else
               "mova_flf2va.json" if args.end_image else "mova_i2va.json" if args.image else "mova_t2va.json")
    path = args.workflow or WORKFLOWS / default
    if not path.is_file():
        raise WorkflowError(f"workflow {path} does not exist")
    prompt = ui_to_api(json.loads(path.read_text(encoding="utf-8")), object_info)
    for flag in ("image", "end_image", "audio", "video"):
        given = getattr(args, flag)
        if given is not None and not given.is_file():
            raise WorkflowError(f"--{flag.replace('_', '-')} {given} does not exist")
    name = lambda p: p.name if p else None  # noqa: E731
    set_parameters(prompt, prompt_text=args.prompt, negative=args.negative, seed=args.seed, width=args.width,
                   height=args.height, frames=args.frames, steps=args.steps, image_name=name(args.image),
                   audio_name=name(args.audio), video_name=name(args.video), end_image_name=name(args.end_image))
    uploaded = {(key, field) for key, node in prompt.items()
                for kind, field in UPLOADED.items() if node["class_type"] == kind}
    return prompt, uploaded


def _title(prompt: dict, node_id) -> str:
    return prompt.get(str(node_id), {}).get("_meta", {}).get("title", str(node_id))


def wait(client: ComfyClient, socket, prompt_id: str, prompt: dict, timeout: float) -> None:
    """Print progress until the prompt finishes; raise ServerError on an error or interruption."""
    start = time.monotonic()
    while True:
        if timeout and time.monotonic() - start > timeout:
            raise ServerError(f"no result after {timeout:g} s; the job is still queued or running on the server")
        message = socket.receive(timeout=5.0)
        if message is None:
            if client.history(prompt_id).get("status", {}).get("completed"):
                return
            continue
        kind, data = message.get("type"), message.get("data", {})
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if kind == "executing" and data.get("node") is not None:
            print(f"running {_title(prompt, data['node'])}", flush=True)
        elif kind == "progress":
            print(f"  {_title(prompt, data.get('node'))}: step {data['value']}/{data['max']}", flush=True)
        elif kind == "execution_error":
            raise ServerError(f"{data.get('node_type')} failed: {data.get('exception_message', '').strip()}")
        elif kind == "execution_interrupted":
            raise ServerError("the run was cancelled on the server")
        elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
            return


def finished_history(client: ComfyClient, prompt_id: str, timeout: float = 60.0) -> dict:
    """The prompt's /history entry once the server has filed it (it lands just after the last message)."""
    deadline = time.monotonic() + timeout
    while True:
        entry = client.history(prompt_id)
        if entry.get("status", {}).get("completed") or time.monotonic() > deadline:
            return entry
        time.sleep(0.2)


def main(argv=None) -> int:
    args = parse_args(argv)
    client = ComfyClient(args.server)
    try:
        object_info = client.object_info()
        prompt, uploaded = build_prompt(args, object_info)
        problems = missing_models(prompt, object_info, skip=uploaded)
        if problems:
            print("refusing to run, the server lacks:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 3
        # each loader was given its file's name by set_parameters; upload the files under those names
        for path in (args.image, args.end_image, args.audio, args.video):
            if path is not None:
                name = client.upload_image(path)
                for key, field in uploaded:
                    if prompt[key]["inputs"].get(field) == path.name:
                        prompt[key]["inputs"][field] = name
        socket = client.websocket()
        try:
            prompt_id = client.queue(prompt)
            print(f"queued {prompt_id} on {client.base}", flush=True)
            try:
                wait(client, socket, prompt_id, prompt, args.timeout)
            except KeyboardInterrupt:
                client.cancel(prompt_id)
                print("cancelled on the server", file=sys.stderr)
                return 130
        finally:
            socket.close()
        videos = video_outputs(finished_history(client, prompt_id), prompt)
        if not videos:
            raise ServerError("the run finished but saved no video: check the SaveVideo node and the server log")
        print(f"saved {client.download(videos[0], args.output)}")
        return 0
    except WorkflowError as exc:
        print(f"workflow: {exc}", file=sys.stderr)
        return 2
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
