"""Every MOVA node's schema as plain JSON: ids, display names, inputs in order (name, type, widget settings),
outputs. ``tests/support/data/node_schemas.json`` holds it as it was before the pack was reorganised (issue 22); a test
compares the pack's specs with it, so a move can never change what a saved workflow sees.

    python tests/support/tools/node_schemas.py PACK_FOLDER OUT.json   # write the snapshot of the pack at PACK_FOLDER

Tooltips and descriptions are left out (wording may change); everything a saved workflow depends on is kept.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

WIDGET_FIELDS = ("default", "min", "max", "step", "round", "options", "model_folder", "model_kinds",
                 "control_after_generate", "multiline")


def _input(item) -> dict:
    if hasattr(item, "kind"):  # a widget
        entry = {"name": item.name, "widget": item.kind}
        for field in WIDGET_FIELDS:
            value = getattr(item, field)
            if value is not None and value is not False:  # unset settings are left out
                entry[field] = list(value) if isinstance(value, tuple) else value
        return entry
    return {"name": item.name, "socket": item.type, "optional": item.optional}


def node_schema(node) -> dict:
    """One node spec as JSON-ready data."""
    return {
        "display_name": node.display_name,
        "output_node": node.output_node,
        "inputs": [_input(item) for item in node.inputs],
        "outputs": [{"name": out.name, "type": out.type} for out in node.outputs],
    }


def schemas(all_nodes) -> dict:
    """{node id: schema} in menu order."""
    return {node.node_id: node_schema(node) for node in all_nodes}


def pack_nodes(pack: Path, name: str = "mova_schema_pack"):
    """The ALL_NODES of the pack at ``pack``, imported the way ComfyUI imports it (its folder as a package);
    works on the flat layout before issue 22 (nodes/spec.py) and the wings after it (nodes/catalog.py)."""
    module_spec = importlib.util.spec_from_file_location(name, pack / "__init__.py",
                                                         submodule_search_locations=[str(pack)])
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    for where in ("nodes.catalog", "nodes.spec"):
        if (pack / (where.replace(".", "/") + ".py")).exists():
            return importlib.import_module(f"{name}.{where}").ALL_NODES
    raise FileNotFoundError(f"{pack} has neither nodes/catalog.py nor nodes/spec.py")


def dump(data: dict) -> str:
    """The snapshot's text: one line per input and output, so a diff shows what changed."""
    lines = ["{"]
    for n, (node_id, node) in enumerate(data.items()):
        lines.append(f"  {json.dumps(node_id)}: {{")
        lines.append(f'    "display_name": {json.dumps(node["display_name"])}, "output_node": '
                     f'{json.dumps(node["output_node"])},')
        for key in ("inputs", "outputs"):
            rows = [f"      {json.dumps(row)}" for row in node[key]]
            tail = "," if key == "inputs" else ""
            lines.append(f'    "{key}": [\n' + ",\n".join(rows) + f"\n    ]{tail}" if rows else f'    "{key}": []{tail}')
        lines.append("  }" + ("," if n < len(data) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit(__doc__)
    pack, out = Path(args[0]).resolve(), Path(args[1])
    out.write_text(dump(schemas(pack_nodes(pack))))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
