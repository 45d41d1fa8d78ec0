"""Tidy the example workflows and make their template-browser thumbnails in ComfyUI's real frontend.

    /path/to/ComfyUI/venv/bin/python scripts/make_thumbnails.py --comfyui /path/to/ComfyUI \
        [--also /path/to/another/ComfyUI] [NAME ...]

For every example_workflows/NAME.json (or the NAMEs given): starts ComfyUI with this pack (a temporary base
folder, ``--cpu``), loads the workflow in headless Chromium (Debian's ``chromium`` through the ``playwright``
package, which the Python running this script needs), measures every node as the frontend sizes it and every
note's text, lays the graph out (scripts/workflow_layout.py: groups, the note top-left, a saved view that shows
everything), saves the JSON, loads it again and screenshots the canvas. NAME.jpg is a title card: the main
note's heading above that screenshot, with the workflow file's SHA-256 in the JPEG comment, so the tests can tell
a stale thumbnail. Re-run it after editing a workflow.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import html
import io
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLES = ROOT / "example_workflows"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "support"))

import frontend  # noqa: E402
from safe_files import write_bytes, write_text  # noqa: E402
import workflow_layout  # noqa: E402

THUMB = 640         # thumbnails are square: the template browser shows them in square cards
PREVIEW_SIZED = ("LoadVideo",)  # nodes whose height follows their media preview at the width they are given
MEDIA_LOAD = 2.0    # seconds for a node's media preview to load and size the node
NOTE_SLACK = 60     # below a note's text: the editor's padding (a little more in frontend 1.35 than in 1.27)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_json(workflow: dict, path: Path) -> None:
    write_text(path, json.dumps(workflow, indent=2, ensure_ascii=False) + "\n")


def measure(page, workflow: dict) -> dict:
    """node id -> [w, h]: the frontend's minimum sizes, and for notes the height their text needs at the width the
    layout gives them."""
    frontend.load_workflow(page, workflow, dialogs=False)
    state = frontend.graph_state(page)
    # the frontend's minimum size of each node; a node previewing a video computes its width from its current one
    # (always wider): it starts from the layout's width and gets the height its preview takes once loaded
    sizes = {n["id"]: [0, 0] if n["type"] in PREVIEW_SIZED else n["computed"] for n in state["nodes"]}
    for _ in range(2):
        # at the widths the layout gives them, nodes that preview media (Load Video) grow once the media loaded:
        # the layout keeps that size
        draft = workflow_layout.tidy(workflow, sizes)
        frontend.load_workflow(page, draft, dialogs=False)
        frontend.settle(page, MEDIA_LOAD)
        grown = {n["id"]: n["size"] for n in frontend.graph_state(page)["nodes"]
                 if n["type"] not in workflow_layout.NOTE_TYPES}
        if all(grown[key][1] <= sizes[key][1] + 0.5 for key in grown):
            break
        sizes = largest(sizes, grown)
    frontend.set_sizes(page, {n["id"]: [n["size"][0], 80] for n in draft["nodes"] if n["type"] in
                              workflow_layout.NOTE_TYPES})
    for key, height in frontend.note_heights(page).items():
        width = next(n["size"][0] for n in draft["nodes"] if n["id"] == int(key))
        sizes[int(key)] = [width, height + NOTE_SLACK]
    return sizes


def title_card(browser, shot: Path, title: str, target: Path, digest: str) -> None:
    """NAME.jpg: the title above the canvas screenshot, the workflow's digest in the JPEG comment."""
    from PIL import Image
    picture = base64.b64encode(shot.read_bytes()).decode()
    heading = title[len("MOVA"):].lstrip(" :") if title.startswith("MOVA") else title
    heading = heading[:1].upper() + heading[1:]
    page = browser.new_page(viewport={"width": THUMB, "height": THUMB})
    page.set_content(f"""<html><body style="margin:0;width:{THUMB}px;height:{THUMB}px;overflow:hidden;
        background:#1b1d22;color:#f2f2f2;font-family:'DejaVu Sans',sans-serif">
        <div style="padding:30px 34px 0 34px;height:170px;box-sizing:border-box">
          <div style="font-size:24px;letter-spacing:2px;color:#8fc3ff;font-weight:700">
            MOVA &#183; VIDEO + SOUND</div>
          <div style="font-size:44px;line-height:1.12;font-weight:700;margin-top:10px">{html.escape(heading)}</div>
        </div>
        <div style="height:{THUMB - 170}px;display:flex;align-items:center;justify-content:center;
             background:#2a2d33;border-top:2px solid #3f789e">
          <img src="data:image/png;base64,{picture}" style="max-width:{THUMB}px;max-height:{THUMB - 172}px">
        </div></body></html>""")
    page.wait_for_timeout(300)
    raw = target.with_suffix(".png.tmp")
    page.screenshot(path=str(raw), type="png")
    page.close()
    jpeg = io.BytesIO()
    with Image.open(raw) as image:
        image.convert("RGB").save(jpeg, "JPEG", quality=88, optimize=True, comment=f"sha256:{digest}".encode())
    write_bytes(target, jpeg.getvalue())
    raw.unlink()


def graph_box(workflow: dict, margin: float = 12) -> dict:
    """The screen box (within the canvas) the graph takes at its saved view."""
    ds = workflow["extra"]["ds"]
    scale, (ox, oy) = ds["scale"], ds["offset"]
    boxes = [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2], g["bounding"][1] + g["bounding"][3])
             for g in workflow.get("groups", [])]
    boxes += [(n["pos"][0], n["pos"][1] - workflow_layout.TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
              for n in workflow["nodes"]]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    left, top = max(0.0, (x0 + ox) * scale - margin), max(0.0, (y0 + oy) * scale - margin)
    return {"x": left, "y": top, "width": (x1 - x0) * scale + 2 * margin, "height": (y1 - y0) * scale + 2 * margin}


def largest(*measured: dict) -> dict:
    """node id -> [w, h]: per node the largest width and height any of the frontends needs (a frontend keeps a
    saved size at or above its own minimum, so the file opens unchanged in each)."""
    sizes: dict = {}
    for one in measured:
        for key, (w, h) in one.items():
            old = sizes.get(key, [0, 0])
            sizes[key] = [max(old[0], w), max(old[1], h)]
    return sizes


def provide_stock_models(base: Path, paths: list[Path]) -> None:
    """Empty files under the names the workflows' stock loaders (Load VAE, Load Frame Interpolation Model, ...)
    pick, in their model folders: newer frontends (1.49) outline a loader whose file the server does not list in red,
    and the thumbnails show the workflow as it looks with its files installed. Nothing is queued, nothing reads them."""
    from workflow_api import STOCK_MODEL_INPUTS
    loaders = {node_type: folder for (node_type, _), folder in STOCK_MODEL_INPUTS.items()}
    for path in paths:
        for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
            name = (node.get("widgets_values") or [None])[0]
            if node["type"] in loaders and isinstance(name, str) and "/" not in name and name not in ("", ".", ".."):
                target = base / "models" / loaders[node["type"]] / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()


@contextlib.contextmanager
def frontend_session(comfyui: str, python: str | None, paths: list[Path]):
    """ComfyUI (with this pack, a temporary base folder holding the media ``paths`` name) and its frontend in
    headless Chromium; yields (browser, page, temporary folder)."""
    from comfy_server import comfy_server, new_base, provide_inputs
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="mova_thumbs_") as tmp:
        base = new_base(Path(tmp))
        provide_inputs(base, paths, comfyui)
        provide_stock_models(base, paths)
        with comfy_server(base, comfyui=comfyui, python=python) as url, sync_playwright() as playwright:
            frontend.store_settings(url, frontend.FIRST_RUN_DONE | frontend.GRAPH_ONLY)
            browser = frontend.launch(playwright)
            try:
                yield browser, frontend.open_frontend(browser, url), Path(tmp)
            finally:
                browser.close()


def unregistered(page, workflow: dict) -> list[str]:
    """The workflow's node types this frontend does not know (core nodes of a newer ComfyUI)."""
    return page.evaluate("types => types.filter(t => !LiteGraph.registered_node_types[t])",
                         sorted({n["type"] for n in workflow["nodes"]}))


def measure_all(comfyui: str, python: str | None, paths: list[Path]) -> dict[Path, dict]:
    """Every workflow's node sizes as the frontend of ``comfyui`` computes them (none for a workflow with node
    types it lacks: it would measure their placeholders)."""
    with frontend_session(comfyui, python, paths) as (_, page, _):
        found = {}
        for path in paths:
            workflow = json.loads(path.read_text(encoding="utf-8"))
            found[path] = {} if unregistered(page, workflow) else measure(page, workflow)
        return found


def run(comfyui: str, python: str | None, names: list[str], layout: bool = True, shots: Path | None = None,
        others: list[tuple[str, str | None]] = ()) -> list[Path]:
    """Lay out (sizes from ``comfyui`` and the ``others`` (ComfyUI, Python) pairs, the largest of each) and
    screenshot in ``comfyui``'s frontend."""
    paths = [EXAMPLES / f"{n}.json" for n in names] if names else sorted(EXAMPLES.glob("*.json"))
    elsewhere = [measure_all(other, other_python, paths) for other, other_python in others] if layout else []
    made = []
    with frontend_session(comfyui, python, paths) as (browser, page, tmp):
        for path in paths:
            workflow = json.loads(path.read_text(encoding="utf-8"))
            lacking = unregistered(page, workflow)
            if lacking:  # mova_i2va_interpolate in v0.3.64 and v0.8.0: leave it as a newer ComfyUI laid it out
                print(f"{path.name}: skipped, this ComfyUI lacks {', '.join(lacking)}: lay it out with one that has "
                      "them (--comfyui)", file=sys.stderr)
                continue
            if layout:
                sizes = largest(measure(page, workflow), *(one[path] for one in elsewhere))
                workflow = workflow_layout.tidy(workflow, sizes)
                save_json(workflow, path)
            problems = workflow_layout.problems(workflow)
            if problems:
                print(f"{path.name}: not tidy:\n  " + "\n  ".join(problems), file=sys.stderr)
            frontend.load_workflow(page, workflow, dialogs=False)
            shot = (shots or Path(tmp)) / f"{path.stem}.png"
            frontend.canvas_screenshot(page, shot, graph_box(workflow))
            target = path.with_suffix(".jpg")
            title_card(browser, shot, workflow_layout.note_title(workflow), target, file_digest(path))
            made.append(target)
            print(f"{path.name}: {target.name}" + (" (laid out)" if layout else ""))
    return made


def venv_python(comfyui: str) -> str:
    return next((str(p) for p in [Path(comfyui) / "venv" / "bin" / "python"] if p.exists()), sys.executable)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", required=True, help="a ComfyUI checkout (its frontend draws the thumbnails)")
    parser.add_argument("--python", help="the Python that runs ComfyUI (default: its venv/bin/python if there, "
                        "else this one)")
    parser.add_argument("--also", action="append", default=[], metavar="COMFYUI",
                        help="another ComfyUI checkout (run by its venv/bin/python) whose frontend also measures the "
                        "nodes: each node gets the largest size, so the file opens unchanged in every frontend")
    parser.add_argument("--no-layout", action="store_true", help="only the thumbnails, the JSON stays as it is")
    parser.add_argument("--shots", type=Path, help="also keep the screenshots of the graphs in this folder")
    parser.add_argument("names", nargs="*", help="workflow names without .json (default: every example workflow)")
    args = parser.parse_args(argv)
    python = args.python or venv_python(args.comfyui)
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
    run(args.comfyui, python, args.names, layout=not args.no_layout, shots=args.shots,
        others=[(other, venv_python(other)) for other in args.also])
    return 0


if __name__ == "__main__":
    sys.exit(main())
