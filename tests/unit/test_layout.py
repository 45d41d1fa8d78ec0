"""The pack's layout holds: no import cycle among its modules (mova_model and nodes, imports inside functions
included), every relative import names a module that exists, mova_model never reaches ComfyUI, the node layer's
naming rule (node.py: a wing's ComfyUI nodes; comfy_*.py: other code that needs ComfyUI; any other name: plain
Python), and no product folder crowded past 15 modules or file past 700 lines."""

import ast
from pathlib import Path

import pytest

from mova_pack import PACK_ROOT

PACKAGES = ("mova_model", "nodes")
COMFY_ROOTS = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "latent_preview"}
MAX_MODULES, MAX_LINES = 15, 700


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACK_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((PACK_ROOT / package).rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path, top_level_only: bool = False):
    """(node, target) for every import of the module: ``target`` absolute inside the pack ("nodes.spec"), or the
    top-level name of an outside module ("torch")."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node, node.module
                continue
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            if len(base) < 1 or node.level - 1 > len(package.split(".")) - 1 and base[0] not in PACKAGES:
                yield node, None
                continue
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield node, full if full in MODULES else target


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for node, target in _imports(name, path):
            if target is None or target.split(".")[0] not in PACKAGES:
                continue
            assert target in MODULES, f"{path.relative_to(PACK_ROOT)}:{node.lineno} imports {target}, which does not exist"
            edges.add(target)
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_cycle_finder_finds_a_cycle():
    """The finder itself: a two-module cycle and a three-module one are found, a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 50 and graph["mova_model.training.trainer"]  # the graph is really built
    assert _cycles(graph) == []


def test_model_code_never_reaches_comfyui():
    for name, path in MODULES.items():
        if not name.startswith("mova_model"):
            continue
        for node, target in _imports(name, path):
            assert target is not None and target.split(".")[0] not in COMFY_ROOTS | {"nodes"}, (
                f"{path.relative_to(PACK_ROOT)}:{node.lineno} imports {target}")


def _needs_comfy(name: str) -> bool:
    leaf = name.rpartition(".")[2]
    return leaf == "node" or leaf.startswith("comfy_")


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("nodes") and not _needs_comfy(n)])
def test_plain_node_modules_do_not_import_comfyui_at_load(name):
    """Any nodes/ module not named node.py or comfy_*.py imports no ComfyUI module when loaded (inside a function
    it may, for what only runs in ComfyUI), and none of the node.py / comfy_*.py modules either."""
    path = MODULES[name]
    for node, target in _imports(name, path, top_level_only=True):
        assert target is None or target.split(".")[0] not in COMFY_ROOTS, (
            f"{path.relative_to(PACK_ROOT)}:{node.lineno} imports {target}: name it comfy_*.py or move the import")
        if target and target.startswith("nodes"):
            assert not _needs_comfy(target), f"{path.relative_to(PACK_ROOT)}:{node.lineno} imports {target}"


def test_node_files_hold_the_nodes():
    """Every ComfyUI node class is in a node.py, and every node.py holds at least one."""
    for name, path in MODULES.items():
        source = path.read_text()
        holds_nodes = "(io.ComfyNode)" in source
        assert holds_nodes == (name.endswith(".node")), path.relative_to(PACK_ROOT)


def test_folders_and_files_stay_small():
    """No product folder holds more than 15 modules (besides __init__.py), no file more than 700 lines."""
    folders = {}
    for path in PACK_ROOT.rglob("*.py"):
        rel = path.relative_to(PACK_ROOT)
        if rel.parts[0] in ("tests", ".venv", "out") or rel.parts[0].startswith("."):
            continue
        if path.name != "__init__.py":
            folders.setdefault(rel.parent, []).append(path.name)
        assert len(path.read_text().splitlines()) <= MAX_LINES, f"{rel} has more than {MAX_LINES} lines"
    crowded = {str(f): len(n) for f, n in folders.items() if len(n) > MAX_MODULES}
    assert not crowded, f"folders past {MAX_MODULES} modules (group them by feature): {crowded}"
