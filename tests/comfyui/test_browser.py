"""The example workflows as a user meets them, in ComfyUI's real frontend (headless Chromium, COMFYUI_PATH; run with
ComfyUI's Python, which needs the playwright package; Debian's chromium draws).

Every example workflow opens with no missing node type, no dialog (every file it names is installed), every
widget value inside its node's current definition (the server's lists, which the MOVA loaders filter), the sizes
and view it was saved with, no console error from the pack, and scripts/workflow_api.py converts it to the API
prompt the frontend itself queues (``app.graphToPrompt``); the template browser lists every example with
its thumbnail; queueing with a missing MOVA file names that file on its node. An example built on core nodes of
newer ComfyUI (mova_i2va_interpolate: v0.33.0's frame interpolation and Math Expression) opens on an older one with
exactly those node types reported missing, and the runner refuses it saying which ComfyUI it needs. Screenshots go
to out/browser/comfyui-<version>/.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from comfy_server import COMFYUI, PACK, PACK_FOLDER, comfy_server, new_base, provide_inputs, write_wan_vae

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI, reason="COMFYUI_PATH is not set (point it at a ComfyUI checkout and run with "
                       "its Python to run the browser test)"),
]

REGISTRY = "https://api.comfy.org/"
EXAMPLES = sorted((PACK / "example_workflows").glob("*.json"))
sys.path.insert(0, str(PACK / "scripts"))


def _version() -> str:
    text = (Path(COMFYUI) / "comfyui_version.py").read_text() if COMFYUI else ""
    found = re.search(r"__version__\s*=\s*\"([^\"]+)\"", text)
    return found.group(1) if found else "unknown"


ARTEFACTS = PACK / "out" / "browser" / f"comfyui-{_version()}"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The files the example workflows name, installed where the README says: the tiny MOVA release, a Wan 2.1 VAE,
    a text encoder, an image checkpoint and an upscale model file (only their names matter here: nothing is run),
    a LoRA and the media the Load nodes name
    (ComfyUI's example.png; made for others)."""
    from comfy_fixtures import write_test_loras
    from tiny_release import write_release
    root = new_base(tmp_path_factory.mktemp("browser_base"))
    models = root / "models"
    write_release(models / "diffusion_models" / "MOVA-360p", ("video_dit", "video_dit_2", "audio_dit",
                                                              "dual_tower_bridge"))
    write_release(models / "vae" / "MOVA-360p", ("audio_vae",))
    write_wan_vae(models / "vae" / "wan_2.1_vae.safetensors")
    from safetensors.torch import save_file
    import torch
    (models / "text_encoders").mkdir(parents=True, exist_ok=True)
    save_file({"shared.weight": torch.zeros(2, 2)}, str(models / "text_encoders" /
                                                         "umt5_xxl_fp8_e4m3fn_scaled.safetensors"))
    # the chaining examples' image checkpoint and upscale model (names only, like the text encoder)
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file({"stub.weight": torch.zeros(2, 2)}, str(models / "checkpoints" / "sd_xl_base_1.0.safetensors"))
    (models / "upscale_models").mkdir(parents=True, exist_ok=True)
    torch.save({"stub.weight": torch.zeros(2, 2)}, models / "upscale_models" / "RealESRGAN_x2plus.pth")
    (models / "frame_interpolation").mkdir(parents=True, exist_ok=True)  # the interpolation example's RIFE file
    torch.save({"stub.weight": torch.zeros(2, 2)}, models / "frame_interpolation" / "rife49.pth")
    write_test_loras(models / "loras")
    provide_inputs(root, EXAMPLES)
    return root


@pytest.fixture(scope="module")
def browser_page(base):
    """The frontend in headless Chromium, its graph ready; yields (page, messages, url)."""
    pytest.importorskip("playwright", reason="the browser test needs the playwright package in ComfyUI's Python")
    import frontend
    from playwright.sync_api import sync_playwright
    if not Path(frontend.CHROMIUM).exists():
        pytest.skip(f"no chromium at {frontend.CHROMIUM} (apt-get install chromium, or set MOVA_CHROMIUM)")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with comfy_server(base) as url, sync_playwright() as playwright:
        frontend.store_settings(url, frontend.FIRST_RUN_DONE)
        browser = playwright.chromium.launch(executable_path=frontend.CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        messages = []
        page = frontend.open_frontend(browser, url, messages)
        yield page, messages, url
        browser.close()


def _from_pack(message: tuple[str, str, str]) -> bool:
    """A console error, page error or failed request that the pack causes (its files, its nodes, its folder)."""
    kind, text, where = message
    blob = f"{text} {where}".lower()
    return any(mark in blob for mark in ("mova", PACK_FOLDER.lower(), "workflow_templates/"))


def _visible_dialogs(page) -> list[str]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('.p-dialog'))
        .filter(d => d.offsetParent !== null || getComputedStyle(d).display !== 'none')
        .map(d => d.innerText.slice(0, 3000))""")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_workflow_opens_as_saved(browser_page, path):
    import frontend
    page, messages, url = browser_page
    messages.clear()
    workflow = json.loads(path.read_text(encoding="utf-8"))
    from comfy_client import ComfyClient
    info = ComfyClient(url).object_info()
    frontend.load_workflow(page, workflow, dialogs=True)
    state = frontend.graph_state(page)
    frontend.canvas_screenshot(page, ARTEFACTS / f"{path.stem}.png")
    page.screenshot(path=str(ARTEFACTS / f"{path.stem}_window.png"))
    if _needs_newer_core(workflow, info):
        _check_refused_as_needing_newer_comfyui(page, workflow, state, info)
        # the missing-nodes dialog asks Comfy's registry (api.comfy.org) which pack provides each node of the graph
        # (ours included) and about comfy-core; without a network those requests fail: the frontend's lookups, not
        # errors of the pack
        assert [m for m in messages if _from_pack(m) and not m[2].startswith(REGISTRY)] == []
        return
    assert _visible_dialogs(page) == []  # no missing nodes, no missing models: everything is installed
    assert [n["type"] for n in state["nodes"] if not n["registered"]] == []
    # node ids as the file stores them (numbers) and as the frontend holds them (numbers; strings from 1.49 on)
    saved = {str(n["id"]): n for n in workflow["nodes"]}
    serialized = {str(n["id"]): n for n in state["serialized"]["nodes"]}
    for node in state["nodes"]:
        node["id"] = str(node["id"])
        label = f"{path.name}: node {node['id']} ({node['type']})"
        for widget in node["widgets"]:
            if widget["values"] is not None and isinstance(widget["value"], str):
                assert widget["value"] in widget["values"], f"{label}: {widget['name']} {widget['value']!r} is not " \
                    f"one of {widget['values'][:8]}"
            if isinstance(widget["value"], (int, float)) and not isinstance(widget["value"], bool):
                low, high = widget["min"], widget["max"]
                assert (low is None or widget["value"] >= low) and (high is None or widget["value"] <= high), \
                    f"{label}: {widget['name']} {widget['value']} outside [{low}, {high}]"
        # the frontend read every stored value into the widget it was saved from (same values back); a widget the
        # node gained since (Create Video's bit_depth in v0.33) comes after them, at its default (checked below)
        stored = saved[node["id"]].get("widgets_values")
        assert (serialized[node["id"]].get("widgets_values") or [])[:len(stored or [])] == (stored or []), label
        # and kept the saved size: the layout the user sees is the one in the file; a node that gained widgets or
        # outputs since it was saved (v0.33: Create Video's bit_depth, Save Video's DynamicCombo format, Get Video
        # Components' bit_depth and color_space outputs) keeps its width and takes the height it needs now
        size, stored_size = [round(v) for v in node["size"]], [round(v) for v in saved[node["id"]]["size"]]
        now, then = serialized[node["id"]], saved[node["id"]]
        changed = len(node["widgets"]) > len(stored or []) or any(
            len(now.get(slots) or []) != len(then.get(slots) or []) for slots in ("inputs", "outputs"))
        assert size == stored_size or (changed and size == [stored_size[0], round(node["computed"][1])]), \
            (label, size, stored_size, node["computed"])
        assert [round(v) for v in node["pos"]] == [round(v) for v in saved[node["id"]]["pos"]], label
    ds = workflow["extra"]["ds"]
    assert state["scale"] == pytest.approx(ds["scale"]) and state["offset"] == pytest.approx(ds["offset"])
    assert [m for m in messages if _from_pack(m)] == []
    # scripts/workflow_api.py converts it to the API prompt the frontend queues (DynamicCombos, defaults, links);
    # widgets of the frontend's own that are no input of the node (the audio player's audioUI in frontends 1.27 and
    # 1.35, which the server ignores) are left out
    from workflow_api import ui_to_api
    ours = ui_to_api(workflow, info)

    def node_inputs(node):
        declared = {n for section in info[node["class_type"]]["input"].values() if isinstance(section, dict)
                    for n in section}
        return {k: v for k, v in node["inputs"].items() if k.split(".")[0] in declared}

    theirs = frontend.api_prompt(page)
    assert {k: (n["class_type"], n["inputs"]) for k, n in ours.items()} == \
        {k: (n["class_type"], node_inputs(n)) for k, n in theirs.items()}


def _needs_newer_core(workflow: dict, info: dict) -> list[str]:
    """The core node types of newer ComfyUI (workflow_api.NEWER_CORE_NODES) the workflow uses and this server lacks."""
    from workflow_api import NEWER_CORE_NODES
    return sorted({n["type"] for n in workflow["nodes"]} & set(NEWER_CORE_NODES) - set(info))


def _check_refused_as_needing_newer_comfyui(page, workflow: dict, state: dict, info: dict) -> None:
    """On a ComfyUI older than the example needs: the frontend reports exactly the newer core node types missing
    (in its missing-nodes dialog), every other node is there, the note says which ComfyUI it needs, and the runner's
    conversion refuses it saying the same."""
    import frontend
    from workflow_api import NEWER_CORE, WorkflowError, ui_to_api
    absent = _needs_newer_core(workflow, info)
    assert sorted({n["type"] for n in state["nodes"] if not n["registered"]}) == absent
    shown = " ".join(_visible_dialogs(page))
    assert all(kind in shown for kind in absent), (absent, shown[:500])
    note = next(n for n in workflow["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    assert f"Needs {NEWER_CORE}" in note
    with pytest.raises(WorkflowError, match=f"core node of newer ComfyUI.*needs {NEWER_CORE}"):
        ui_to_api(workflow, info)
    frontend.close_dialogs(page)
    assert _visible_dialogs(page) == []


def test_template_browser_lists_every_example_with_its_thumbnail(browser_page):
    import frontend
    page, messages, _ = browser_page
    messages.clear()
    thumbnails = []
    page.on("response", lambda r: thumbnails.append((r.status, r.url)) if r.url.endswith(".jpg") else None)
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.wait_for_selector("[data-testid^='template-workflow-'], .template-card", timeout=60_000)
    frontend.settle(page, 1.0)
    page.get_by_text(PACK_FOLDER, exact=True).first.click()
    shown = []
    for path in EXAMPLES:
        # the cards below the fold load their pictures when scrolled to (frontend 1.35): look at each in view
        selector = f"[data-testid='template-workflow-{path.stem}']"
        card = page.locator(selector).first
        for _ in range(10):  # frontend 1.27 shows 12 cards and adds more as the list is scrolled to its end
            if card.count():
                break
            last = page.locator("[data-testid^='template-workflow-']").last
            last.scroll_into_view_if_needed()
            box = last.bounding_box()
            if box:
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.mouse.wheel(0, 1500)
            frontend.settle(page, 0.5)
        card.wait_for(state="attached", timeout=30_000)
        card.scroll_into_view_if_needed()
        page.wait_for_function("""sel => Array.from(document.querySelectorAll(sel + ' img'))
            .some(i => i.complete && i.naturalWidth > 0)""", arg=selector, timeout=30_000)
        shown.append((path.stem, page.evaluate("""sel => Array.from(document.querySelectorAll(sel + ' img'))
            .map(i => [i.getAttribute('src'), i.naturalWidth])""", selector)))
        if path == EXAMPLES[0]:
            frontend.settle(page, 1.0)
            page.screenshot(path=str(ARTEFACTS / "template_browser.png"))
    for name, images in shown:
        # the card shows NAME.jpg (the frontend fetches it into a blob: URL); our thumbnails are 640 wide
        assert any(width == 640 for _, width in images), (name, images)
    fetched = [t for t in thumbnails if "/workflow_templates/" in t[1] and t[1].endswith(".jpg")]
    # each thumbnail fetched from the pack's folder (a card scrolled out and back may fetch its picture again)
    assert sorted({url.rsplit("/", 1)[1] for _, url in fetched}) == sorted(f"{p.stem}.jpg" for p in EXAMPLES)
    assert all(status == 200 for status, _ in fetched), fetched
    assert [m for m in messages if _from_pack(m)] == []
    frontend.reload(page)


def test_queue_names_the_missing_mova_file_on_its_node(browser_page):
    """A MOVA file that is not installed: Queue is refused at once, the error names the file and sits on its node."""
    import frontend
    page, messages, _ = browser_page
    workflow = json.loads((PACK / "example_workflows" / "mova_i2va.json").read_text(encoding="utf-8"))
    high = next(n for n in workflow["nodes"] if n["type"] == "MovaVideoExpertLoader"
                and n["widgets_values"][0].endswith("video_dit"))
    high["widgets_values"][0] = "MOVA-720p/video_dit"  # saved by someone with the 720p release
    frontend.load_workflow(page, workflow, dialogs=False)
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as answer:
        page.evaluate("() => window.app.queuePrompt(0, 1)")
    body = answer.value.json()
    frontend.settle(page, 1.5)
    errors = body["node_errors"]
    assert list(errors) == [str(high["id"])], errors  # only that node: nothing else is wrong
    details = " ".join(e["details"] for e in errors[str(high["id"])]["errors"])
    assert details.startswith("model_name - 'MOVA-720p/video_dit' is not in models/diffusion_models")
    assert 'hf download OpenMOSS-Team/MOVA-720p --include "video_dit/*"' in details
    flagged = page.evaluate("() => Object.keys(app.lastNodeErrors || {})")  # the nodes the canvas outlines in red
    assert flagged == [str(high["id"])]
    shown = " ".join(_visible_dialogs(page))  # frontends 1.27 and 1.35: an error dialog repeats the message
    if "MOVA-720p/video_dit" not in shown:  # 1.49: a toast leads to the Errors panel, an entry's info opens it
        shown = _error_panel_entry(page, high["title"])
    page.screenshot(path=str(ARTEFACTS / "queue_missing_file.png"))
    assert "MOVA-720p/video_dit" in shown and "hf download" in shown
    frontend.reload(page)


def _error_panel_entry(page, title: str) -> str:
    """The message the Errors panel of newer frontends (1.49) shows for a node's rejected input: open the panel
    from the error toast (View details) and the node's entry from its info button."""
    import frontend
    details = page.get_by_text("View details")
    if details.count():
        details.first.click()
        frontend.settle(page, 1.0)
    info = page.locator(f"button[aria-label^='Info for {title}']")
    if not info.count():
        return ""
    target = info.first.get_attribute("aria-controls")
    info.first.click()
    frontend.settle(page, 1.0)
    return page.evaluate("id => document.getElementById(id)?.innerText || ''", target)
