"""The shape of a UI-format workflow (what ComfyUI's Save / Export writes), checked before the conversion reads it.

A workflow is untrusted input: one edited by hand or damaged in transit gets a message naming the node or link
and the fix, not a Python error from inside the conversion. Standard library only.
"""

from __future__ import annotations

FIX = "open the workflow in ComfyUI and save it again (or use an intact copy of the file)"
LINK_FORM = "[id, from node, from slot, to node, to slot, type]"


class ShapeError(ValueError):
    """The workflow's nodes or links are not shaped as ComfyUI writes them; the message says where."""


def _is_id(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value != "")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _check_node(position: int, node, seen: set[str]) -> None:
    if not isinstance(node, dict):
        raise ShapeError(f"entry {position} of the workflow's nodes is {_shown(node)}, not a node (an object with "
                         f"an id and a type): {FIX}")
    ident, kind = node.get("id"), node.get("type")
    if not _is_id(ident):
        raise ShapeError(f"entry {position} of the workflow's nodes ({_shown(kind)}) has no id (a number): {FIX}")
    if str(ident) in seen:
        raise ShapeError(f"two nodes of the workflow have the id {ident}, so its links are ambiguous: {FIX}")
    seen.add(str(ident))
    if not isinstance(kind, str) or not kind:
        raise ShapeError(f"node {ident} has no type (the node's class, e.g. MovaSampler): {FIX}")
    inputs = node.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(entry, dict) for entry in inputs):
        raise ShapeError(f"node {ident} ({kind}): its inputs are {_shown(inputs)}, not a list of sockets (objects "
                         f"with name, type and link): {FIX}")
    for entry in inputs:
        link = entry.get("link")
        if link is not None and not _is_id(link):
            raise ShapeError(f"node {ident} ({kind}): input {_shown(entry.get('name'))} names the link "
                             f"{_shown(link)}, not a link number: {FIX}")


def check_shape(workflow: dict) -> None:
    """Raise ShapeError unless every node is an object with an id (unique) and a type, its inputs are sockets
    whose link is a number, and every link is a list ``LINK_FORM``. ``workflow["nodes"]`` is a list."""
    seen: set[str] = set()
    for position, node in enumerate(workflow["nodes"], 1):
        _check_node(position, node, seen)
    links = workflow.get("links", [])
    if not isinstance(links, list):
        raise ShapeError(f"the workflow's links are {_shown(links)}, not a list of links {LINK_FORM}: {FIX}")
    for position, link in enumerate(links, 1):
        if not (isinstance(link, list) and len(link) >= 5 and _is_id(link[0]) and _is_id(link[1])
                and isinstance(link[2], int) and not isinstance(link[2], bool)):
            raise ShapeError(f"entry {position} of the workflow's links is {_shown(link)}, not a link {LINK_FORM}: "
                             f"{FIX}")
