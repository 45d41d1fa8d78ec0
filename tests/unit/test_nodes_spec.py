"""The node layer without ComfyUI: the pack imports, the plain modules stay ComfyUI-free, schemas are sane."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import comfyui_mova
from comfyui_mova.nodes.catalog import ALL_NODES
from comfyui_mova.nodes.loaders.spec import VIDEO_EXPERT_LOADER
from comfyui_mova.nodes.prompts.spec import PROMPT_ENHANCE
from comfyui_mova.nodes.sampling.spec import SAMPLER
from comfyui_mova.nodes.training.spec import TRAIN_LORA

PACK = Path(comfyui_mova.__file__).parent
# every nodes/ module but the ComfyUI glue (node.py, comfy_*.py): plain Python (tests/unit/test_layout.py's rule)
PLAIN_MODULES = sorted(".".join(p.relative_to(PACK / "nodes").with_suffix("").parts)
                       for p in (PACK / "nodes").rglob("*.py")
                       if p.name != "node.py" and not p.name.startswith("comfy_") and p.name != "__init__.py")
WINGS = ("loaders", "conditioning", "sampling", "native", "prompts", "training", "lora", "parallel")


def _comfy_available() -> bool:
    return importlib.util.find_spec("comfy_api") is not None


@pytest.mark.skipif(_comfy_available(), reason="comfy_api is importable here; this checks the plain-Python path")
def test_entrypoint_without_comfyui_says_why():
    import asyncio
    with pytest.raises(RuntimeError, match="inside ComfyUI"):
        asyncio.run(comfyui_mova.comfy_entrypoint())


def test_pack_exports_no_v1_mappings():
    # NODE_CLASS_MAPPINGS would make ComfyUI take the V1 path and ignore comfy_entrypoint.
    assert not hasattr(comfyui_mova, "NODE_CLASS_MAPPINGS")


def test_plain_node_modules_import_without_comfy():
    """Fresh interpreter: importing the plain node modules pulls in no ComfyUI module."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(PACK / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(PACK)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m)\n"
        + "".join(f"import pack.nodes.{name}\n" for name in PLAIN_MODULES)
        + "bad = [n for n in sys.modules if n.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'nodes')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_node_ids_prefixed_and_unique():
    ids = [node.node_id for node in ALL_NODES]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("Mova") for i in ids)


@pytest.mark.parametrize("node", ALL_NODES, ids=lambda n: n.node_id)
def test_every_input_has_a_tooltip_and_valid_default(node):
    names = [i.name for i in node.inputs]
    assert len(set(names)) == len(names)
    for item in node.inputs:
        assert item.tooltip and len(item.tooltip) > 20, f"{node.node_id}.{item.name} needs a real tooltip"
    for out in node.outputs:
        assert out.tooltip
    for widget in node.widgets:
        if widget.default is not None:
            assert widget.problem(widget.default) is None
        assert widget.kind in ("INT", "FLOAT", "COMBO", "STRING", "BOOLEAN")
        assert not widget.multiline or widget.kind == "STRING"
        if widget.kind == "COMBO":
            assert (widget.options is None) != (widget.model_folder is None)
    # optional inputs come last: ComfyUI lists required inputs first, so widget order must not depend on it
    flags = [i.optional for i in node.sockets]
    assert flags == sorted(flags)


def test_network_code_uses_the_standard_library_only():
    """The prompt enhancer talks HTTP with the standard library: no new runtime dependency."""
    for name in ("llm_client", "llm_access", "llm_http", "enhance", "reply", "instructions"):
        tree = ast.parse((PACK / "nodes" / "prompts" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert all(r in sys.stdlib_module_names or r == "__future__" for r in roots), (name, roots)


def test_widget_problem_messages():
    steps = SAMPLER.widgets[1]
    assert steps.name == "steps"
    assert steps.problem(0) == "steps 0 is below the minimum 1"
    assert "whole number" in steps.problem(2.5)
    assert VIDEO_EXPERT_LOADER.widgets[1].problem("int4") is not None
    assert SAMPLER.widgets[0].stored_values == 2  # seed + its control_after_generate value
    retry = next(w for w in PROMPT_ENHANCE.widgets if w.kind == "BOOLEAN")
    assert retry.problem(True) is None and "true or false" in retry.problem("yes")
    resume = next(w for w in TRAIN_LORA.widgets if w.name == "resume")
    assert resume.kind == "BOOLEAN" and resume.problem(True) is None
    assert resume.problem("yes") == "resume must be true or false, got 'yes'"


def test_extension_lists_every_spec():
    """comfy_extension.py (needs ComfyUI) registers a class for every spec, and each class, in its wing's node.py,
    builds its schema from that spec in the wing's spec.py."""
    tree = ast.parse((PACK / "nodes" / "comfy_extension.py").read_text())
    listed = next(node.value for node in tree.body
                  if isinstance(node, ast.Assign) and node.targets[0].id == "NODE_CLASSES")
    assert [elt.id for elt in listed.elts] == [node.node_id for node in ALL_NODES]  # the same menu order
    specs = {wing: importlib.import_module(f"comfyui_mova.nodes.{wing}.spec") for wing in WINGS}
    for node in ALL_NODES:
        (wing, constant), = [(w, name) for w, module in specs.items() for name, value in vars(module).items()
                             if value is node]
        source = (PACK / "nodes" / wing / "node.py").read_text()
        assert f"class {node.node_id}(io.ComfyNode)" in source, (wing, node.node_id)
        assert re.search(rf"schema\(spec\.{constant}[,)]", source), constant
