"""Drive ComfyUI's real frontend in headless Chromium (playwright with Debian's chromium): open it, load a
workflow as a user would, read what the frontend made of it, take screenshots. Used by scripts/make_thumbnails.py
and tests/comfyui/test_browser.py."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request

CHROMIUM = os.environ.get("MOVA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = {"width": 1920, "height": 1080}
# Settings of a user who has seen the first-run template dialog; nothing else is changed.
FIRST_RUN_DONE = {"Comfy.TutorialCompleted": True}
# For pictures of the graph alone: no minimap, no canvas statistics.
GRAPH_ONLY = {"Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}


def settle(page, seconds: float = 0.5) -> None:
    """Let the frontend draw (two animation frames) and its DOM widgets follow."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    time.sleep(seconds)


def close_dialogs(page) -> None:
    """Close whatever dialogs are open (Escape, then their close buttons)."""
    page.keyboard.press("Escape")
    settle(page, 0.3)
    for button in page.locator(".p-dialog button[aria-label='Close'], .p-dialog-close-button").all():
        if button.is_visible():
            button.click()
    settle(page, 0.3)


def store_settings(url: str, settings: dict) -> None:
    for key, value in settings.items():
        request = urllib.request.Request(f"{url}/settings/{key}", data=json.dumps(value).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).read()


def launch(playwright):
    """Headless Chromium (Debian's, not a browser downloaded by playwright)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])


def open_frontend(browser, url: str, messages: list | None = None):
    """A page with ComfyUI's frontend loaded and its graph ready; console errors and page errors go to
    ``messages`` as (kind, text, location url), failed requests as ("http", "<status> <url>", url)."""
    page = browser.new_page(viewport=WINDOW)
    if messages is not None:
        page.on("console", lambda m: messages.append(("console", m.text, m.location.get("url", "")))
                if m.type == "error" else None)
        page.on("pageerror", lambda e: messages.append(("pageerror", str(e), "")))
        page.on("response", lambda r: messages.append(("http", f"{r.status} {r.url}", r.url))
                if r.status >= 400 else None)
    page.goto(url)
    wait_ready(page)
    return page


def wait_ready(page) -> None:
    """Wait until the frontend's graph and node definitions are there."""
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas && "
                           "window.LiteGraph && Object.keys(LiteGraph.registered_node_types).length > 100",
                           timeout=180_000)
    settle(page, 2.0)


def reload(page) -> None:
    """Reload the frontend (closes every dialog)."""
    page.reload()
    wait_ready(page)


def load_workflow(page, workflow: dict, dialogs: bool = True) -> None:
    """The workflow loaded the way the template browser and drag-and-drop load one (saved view restored); with
    ``dialogs`` off the missing-models dialog is not shown."""
    page.evaluate("([wf, dialogs]) => window.app.loadGraphData(wf, true, true, null, "
                  "{showMissingModelsDialog: dialogs, showMissingNodesDialog: dialogs})", [workflow, dialogs])
    settle(page, 1.0)


def graph_state(page) -> dict:
    """What the frontend holds after loading: per node its type, whether the type is registered, pos, size, the
    minimum size it computes, widget values and (for combos and numbers) what the node's definition allows;
    the view (scale, offset) and the canvas size."""
    return page.evaluate("""() => {
        const nodes = app.graph.nodes.map(n => ({
            id: n.id, type: n.type, registered: !!LiteGraph.registered_node_types[n.type],
            pos: Array.from(n.pos), size: Array.from(n.size), computed: Array.from(n.computeSize()),
            widgets: (n.widgets || []).map(w => ({name: w.name, type: w.type, value: w.value,
                values: Array.isArray(w.options?.values) ? w.options.values : null,
                min: w.options?.min ?? null, max: w.options?.max ?? null})),
            widgets_values: n.widgets_values ?? null,
        }));
        const ds = app.canvas.ds;
        const rect = app.canvas.canvas.getBoundingClientRect();
        return {nodes, scale: ds.scale, offset: Array.from(ds.offset),
                canvas: [rect.x, rect.y, rect.width, rect.height],
                serialized: app.graph.serialize()};
    }""")


def note_heights(page) -> dict:
    """node id -> the height a note's text needs at its current width (its DOM widget's scroll height)."""
    return page.evaluate("""() => {
        const found = {};
        for (const n of app.graph.nodes) {
            if (!["Note", "MarkdownNote"].includes(n.type)) continue;
            const el = n.widgets?.[0]?.element;
            if (!el) continue;
            const inner = el.querySelector(".ProseMirror, .tiptap, textarea") || el;
            found[n.id] = Math.max(inner.scrollHeight, el.scrollHeight);
        }
        return found;
    }""")


def set_sizes(page, sizes: dict) -> None:
    page.evaluate("""sizes => { for (const n of app.graph.nodes) { const s = sizes[n.id];
        if (s) n.setSize([s[0], s[1]]); } app.graph.setDirtyCanvas(true, true); }""", {str(k): v for k, v in sizes.items()})
    settle(page, 0.5)


def canvas_screenshot(page, path, box: dict | None = None) -> None:
    """The canvas as the user sees it (DOM widgets such as notes and text boxes included), or the ``box`` of it
    (x, y, width, height in canvas pixels)."""
    x, y, w, h = page.evaluate("() => { const r = app.canvas.canvas.getBoundingClientRect(); "
                               "return [r.x, r.y, r.width, r.height]; }")
    if box is not None:
        x, y = x + box["x"], y + box["y"]
        w, h = min(box["width"], w - box["x"]), min(box["height"], h - box["y"])
    page.screenshot(path=str(path), clip={"x": x, "y": y, "width": w, "height": h})


def api_prompt(page) -> dict:
    """The API prompt the frontend queues for the loaded graph (its own conversion: ``app.graphToPrompt``)."""
    return page.evaluate("async () => (await app.graphToPrompt()).output")
