"""Tidy layout for the example workflows: notes on the left, then one group per stage (Models, Prompt, Sampling,
Output; Data and Training for the trainer), each node in its group's column, and a saved view that shows the
whole graph at a readable zoom in a 1920x1080 window, in ComfyUI's frontends 1.27 and 1.35.

Plain Python (standard library). ``tidy(workflow, sizes)`` returns the laid-out workflow; ``problems(workflow)``
lists what is not tidy (the tests run it on every example workflow). scripts/make_thumbnails.py measures the
nodes in the real frontend, calls ``tidy`` and saves the result.
"""

from __future__ import annotations

import copy
import itertools

NOTE_TYPES = ("Note", "MarkdownNote")
TITLE_H = 30          # LiteGraph's node title bar, drawn above a node's pos
GROUP_TITLE_H = 40    # room for a group's title above its first node
PAD = 20              # inside a group, around its nodes
GAP_X, GAP_Y = 40, 20
MAX_COLUMN_H = 1200   # a group's column is split in two when its nodes stack higher than this
COLUMN_HEIGHTS = (MAX_COLUMN_H, 1400, 1000, 800)  # what tidy() tries per group (the first wins a tie)
NOTE_WIDTH = 520
# What the canvas of a 1920x1080 window shows in both frontends (canvas pixels): frontend 1.27 puts the canvas at
# (64, 78) of the window, 1.35 covers the window and lays its tabs, menu and side bar over the canvas' top and left
# edges. Both draw the minimap over the bottom-right corner. The saved view shows everything inside VIEW and
# outside MINIMAP.
VIEW = (70, 100, 1850, 995)          # left, top, right, bottom
MINIMAP = (1550, 730)                # the corner right of x and below y
MIN_SCALE = 0.65                     # below this the widgets' text gets hard to read (checked on 1080p screenshots)

# A VAE Decode fed by a KSampler decodes an image model's picture (a first frame), not MOVA's video: it is
# placed by this name.
FIRST_FRAME_DECODE = "VAEDecode (first frame)"
# Stage groups, left to right: (title, colour, node types in the order they stack).
GROUPS = (
    ("Models", "#3f789e", ("MovaVideoExpertLoader", "UNETLoader", "MovaAudioTowerLoader", "MovaLoraLoader",
                           "MovaAudioVAELoader", "VAELoader", "CLIPLoader", "CheckpointLoaderSimple",
                           "UpscaleModelLoader", "FrameInterpolationModelLoader")),
    # an image model making the first frame (CLIP Text Encode .. KSampler, and its VAE Decode: FIRST_FRAME_DECODE)
    # stacks with the prompt
    ("Prompt", "#8A8", ("MovaPromptBuilder", "MovaPromptEnhance", "MovaTextEncode", "CLIPTextEncode", "LoadImage",
                        "LoadAudio", "LoadVideo", "GetVideoComponents", "EmptyLatentImage", "KSampler",
                        FIRST_FRAME_DECODE)),
    ("Data", "#8AA", ("MovaDataset",)),
    ("Sampling", "#b58b2a", ("MovaConditioning", "MovaSamplerOptions", "MovaParallel", "MovaSampler", "MovaExtend", "MovaGuider",
                             "MovaScheduler", "RandomNoise", "KSamplerSelect", "SamplerCustomAdvanced")),
    ("Training", "#b58b2a", ("MovaTrainLora",)),
    ("Output", "#a1309b", ("MovaSeparateAVLatent", "VAEDecode", "VAEDecodeTiled", "ImageUpscaleWithModel", "ImageScaleBy",
                           "FrameInterpolate", "MovaAudioDecode", "MovaJoin", "ComfyMathExpression", "CreateVideo", "SaveVideo",
                           "SaveAudio",
                           "PreviewAudio", "MovaSaveLora", "PreviewImage", "SaveImage", "PreviewAny")),
)
GROUP_TITLES = tuple(title for title, _, _ in GROUPS)
# Widths by node type (the frontend's own minimum is kept when it is larger).
WIDTHS = {"MovaTextEncode": 400, "CLIPTextEncode": 400, "MovaPromptEnhance": 400, "MovaPromptBuilder": 400,
          "LoadImage": 300, "LoadVideo": 400, "SaveVideo": 320, "PreviewImage": 360, "MovaTrainLora": 360, "MovaDataset": 360,
          "CLIPLoader": 320}
DEFAULT_WIDTH = 300
HEIGHTS = {"SaveVideo": 220, "PreviewImage": 260, "MovaTextEncode": 170, "CLIPTextEncode": 170}


def group_of(node_type: str) -> str:
    """The stage group a node type belongs to (by name for types not in GROUPS: loaders, savers, loaders of media)."""
    for title, _, types in GROUPS:
        if node_type in types:
            return title
    if node_type.endswith("Loader"):
        return "Models"
    if node_type.startswith(("Save", "Preview")):
        return "Output"
    if node_type.startswith("Load"):
        return "Prompt"
    return "Sampling"


def placement(workflow: dict, node: dict) -> str:
    """The name a node is placed by: its type, or FIRST_FRAME_DECODE for a VAE Decode of a KSampler's picture."""
    if node["type"] == "VAEDecode":
        entry = next((i for i in node.get("inputs", []) if i["name"] == "samples"), None)
        link = next((lk for lk in workflow.get("links", []) if entry and lk[0] == entry.get("link")), None)
        source = next((n for n in workflow["nodes"] if link and n["id"] == link[1]), None)
        if source is not None and source["type"] == "KSampler":
            return FIRST_FRAME_DECODE
    return node["type"]


def _rank(node_type: str) -> int:
    for _, _, types in GROUPS:
        if node_type in types:
            return types.index(node_type)
    return len(GROUPS)


def notes(workflow: dict) -> list[dict]:
    """The workflow's notes, the main one (lowest id) first."""
    return sorted((n for n in workflow["nodes"] if n["type"] in NOTE_TYPES), key=lambda n: n["id"])


def note_title(workflow: dict) -> str:
    """The main note's first Markdown heading (the workflow's title for people)."""
    text = notes(workflow)[0]["widgets_values"][0]
    first = text.strip().splitlines()[0]
    return first.lstrip("#").strip()


def _linked_text(node: dict) -> bool:
    """Whether a text node's text comes through a link (its text box is then not drawn)."""
    return any(i.get("widget", {}).get("name") == "text" and i.get("link") is not None for i in node.get("inputs", []))


def _size(node: dict, sizes: dict) -> list[float]:
    measured = sizes.get(node["id"], node.get("size", [DEFAULT_WIDTH, 60]))
    width = max(WIDTHS.get(node["type"], DEFAULT_WIDTH), measured[0])
    height = max(0 if _linked_text(node) else HEIGHTS.get(node["type"], 0), measured[1])
    if node["type"] in NOTE_TYPES:
        width = max(NOTE_WIDTH, measured[0])
    return [float(round(width)), float(round(height))]


def _stack(items: list[dict], x: float, y: float, width: float | None = None) -> float:
    """Place ``items`` (nodes with sizes) top-down from (x, y); returns the bottom (body of the last node)."""
    bottom = y
    for node in items:
        node["pos"] = [float(x), float(bottom + TITLE_H)]
        if width is not None:
            node["size"][0] = width
        bottom = node["pos"][1] + node["size"][1] + GAP_Y
    return bottom - GAP_Y


def _columns(items: list[dict], max_height: float = MAX_COLUMN_H) -> list[list[dict]]:
    """Split a group's nodes into columns no higher than ``max_height`` (in order)."""
    columns, height = [[]], 0.0
    for node in items:
        h = node["size"][1] + TITLE_H + GAP_Y
        if columns[-1] and height + h > max_height:
            columns.append([])
            height = 0.0
        columns[-1].append(node)
        height += h
    return columns


def tidy(workflow: dict, sizes: dict | None = None) -> dict:
    """The workflow laid out: ``sizes`` (node id -> [w, h], e.g. measured in the frontend) are kept as minimum
    sizes. The notes go to the left, the main one on top; the stage groups follow left to right, each in columns
    of the height (MAX_COLUMN_H or lower) that lets the saved view, which fits the whole graph, zoom in most."""
    present = {group_of(n["type"]) for n in workflow["nodes"] if n["type"] not in NOTE_TYPES}
    titles = [title for title in GROUP_TITLES if title in present]
    best = None
    for heights in itertools.product(COLUMN_HEIGHTS, repeat=len(titles)):
        wf = _arrange(workflow, sizes, dict(zip(titles, heights)))
        if best is None or wf["extra"]["ds"]["scale"] > best["extra"]["ds"]["scale"]:
            best = wf
    return best


def _arrange(workflow: dict, sizes: dict | None, column_heights: dict[str, float]) -> dict:
    wf = copy.deepcopy(workflow)
    sizes = sizes or {}
    for node in wf["nodes"]:
        node["size"] = _size(node, sizes)
    all_notes = notes(wf)
    main, others = all_notes[0], all_notes[1:]
    nodes = [n for n in wf["nodes"] if n["type"] not in NOTE_TYPES]
    by_group: dict[str, list[dict]] = {}
    for node in sorted(nodes, key=lambda n: (_rank(placement(wf, n)), round(n.get("pos", [0, 0])[0]),
                                             n.get("pos", [0, 0])[1], n["id"])):
        by_group.setdefault(group_of(placement(wf, node)), []).append(node)
    loose = others
    _stack([main, *loose], 0, 0, width=max(n["size"][0] for n in [main, *loose]))
    x = NOTE_WIDTH + GAP_X
    wf["groups"] = []
    for title, color, _ in GROUPS:
        members = by_group.pop(title, None)
        if not members:
            continue
        left, top, bottom = x, GROUP_TITLE_H + PAD, 0.0
        for column in _columns(members, column_heights.get(title, MAX_COLUMN_H)):
            width = max(n["size"][0] for n in column)
            bottom = max(bottom, _stack(column, x + PAD, top, width=width))
            x += width + GAP_X / 2
        x += PAD * 2 - GAP_X / 2
        wf["groups"].append({"title": title, "bounding": [float(left), 0.0, float(x - left), float(bottom + PAD)],
                             "color": color, "font_size": 24, "flags": {}})
        x += GAP_X
    assert not by_group, f"node groups without a place: {sorted(by_group)}"
    wf.setdefault("extra", {})["ds"] = fit_view(wf)
    return wf


def _boxes(workflow: dict) -> list[tuple[tuple[float, float, float, float], bool]]:
    """(box, whether the minimap may not cover it): nodes must stay clear of it, a group's empty corner may not."""
    boxes = [(_rect(n), True) for n in workflow["nodes"]]
    return boxes + [((b[0], b[1], b[0] + b[2], b[1] + b[3]), False) for g in workflow.get("groups", [])
                    for b in [g["bounding"]]]


def _on_screen(box, scale: float, offset) -> tuple[float, float, float, float]:
    return tuple((v + offset[i % 2]) * scale for i, v in enumerate(box))


def _hidden(box, minimap: bool = True) -> str | None:
    """Why a box on the canvas (screen pixels) is not fully seen: outside VIEW, or (``minimap``) under the minimap."""
    if box[0] < VIEW[0] or box[1] < VIEW[1] or box[2] > VIEW[2] or box[3] > VIEW[3]:
        return f"outside the view {VIEW}"
    if minimap and box[2] > MINIMAP[0] and box[3] > MINIMAP[1]:
        return f"under the minimap (right of {MINIMAP[0]}, below {MINIMAP[1]})"
    return None


def fit_view(workflow: dict) -> dict:
    """The saved view (extra.ds): the largest zoom up to 1 at which the whole graph, its top-left corner at VIEW's,
    is seen."""
    boxes = _boxes(workflow)
    x0, y0 = min(b[0] for b, _ in boxes), min(b[1] for b, _ in boxes)
    for step in range(1000, 100, -5):
        scale = step / 1000
        offset = [round(VIEW[0] / scale - x0, 1), round(VIEW[1] / scale - y0, 1)]
        if not any(_hidden(_on_screen(b, scale, offset), minimap) for b, minimap in boxes):
            return {"scale": scale, "offset": offset}
    raise ValueError("the graph does not fit the view at any zoom")


def _rect(node: dict) -> tuple[float, float, float, float]:
    """A node's box on the canvas, title bar included: (x0, y0, x1, y1)."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - TITLE_H, x + w, y + h


def _inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def problems(workflow: dict) -> list[str]:
    """What is not tidy: nodes outside their group or overlapping, groups overlapping or missing, the main note not
    first and in view, anything outside the saved view, a zoom too small to read."""
    found = []
    groups = {g["title"]: g for g in workflow.get("groups", [])}
    rects = {t: (b[0], b[1], b[0] + b[2], b[1] + b[3]) for t, g in groups.items() for b in [g["bounding"]]}
    for title in groups:
        if title not in GROUP_TITLES:
            found.append(f"group {title!r} is none of {', '.join(GROUP_TITLES)}")
    titles = list(groups)
    for i, a in enumerate(titles):
        for b in titles[i + 1:]:
            if _overlap(rects[a], rects[b]):
                found.append(f"groups {a} and {b} overlap")
    nodes = workflow["nodes"]
    for node in nodes:
        label = f"node {node['id']} ({node['type']})"
        if node["type"] in NOTE_TYPES:
            continue
        want = group_of(placement(workflow, node))
        if want not in rects:
            found.append(f"{label} belongs in a {want} group, which the workflow lacks")
        elif not _inside(_rect(node), rects[want]):
            found.append(f"{label} is not inside the {want} group")
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if _overlap(_rect(a), _rect(b)):
                found.append(f"nodes {a['id']} ({a['type']}) and {b['id']} ({b['type']}) overlap")
    ds = workflow.get("extra", {}).get("ds", {})
    scale, offset = ds.get("scale", 1.0), ds.get("offset", [0, 0])
    if scale < MIN_SCALE:
        found.append(f"the saved zoom {scale} is below {MIN_SCALE}: too small to read")

    all_notes = notes(workflow)
    if not all_notes:
        found.append("the workflow has no note")
    else:
        main = all_notes[0]
        if not main["widgets_values"][0].lstrip().startswith("# "):
            found.append("the main note does not start with a '# ' heading (its title)")
        if any(_rect(n)[0] < _rect(main)[0] or _rect(n)[1] < _rect(main)[1] for n in nodes):
            found.append("the main note is not the top-left item")
    for node in nodes:
        why = _hidden(_on_screen(_rect(node), scale, offset))
        if why:
            found.append(f"node {node['id']} ({node['type']}) is not seen at the saved view: {why}")
    for title, r in rects.items():
        why = _hidden(_on_screen(r, scale, offset), minimap=False)
        if why:
            found.append(f"group {title} is not seen at the saved view: {why}")
    return found
