"""The README and the guides in docs/: every Python snippet runs, every link leads somewhere, the README stays short
with the install and test commands on its first screen (the test command being what .ci/run runs), and the workflow
guide names every example workflow and every node.

A snippet that needs a GPU or the full release is marked ``<!-- snippet: tiny -->`` on the line before its fence:
its top-level settings (``root``, ``device``, ``dtype``, the sizes, the steps, ``dataset_file``) are replaced by the
tiny release's on the CPU, nothing else. The snippets of one file run in order, in one namespace, in a fresh
interpreter whose working folder is a temporary one, with the pack folder on ``sys.path`` (as from the pack folder).
"""

import ast
import re
import subprocess
import sys

import pytest

from comfyui_mova.nodes.catalog import ALL_NODES
from mova_pack import PACK_ROOT
from training_fixtures import build_toy_dataset

PAGES = [PACK_ROOT / "README.md", PACK_ROOT / "SECURITY.md", *sorted((PACK_ROOT / "docs").glob("*.md"))]
TINY_MARK = "<!-- snippet: tiny -->"
README_MAX_BYTES = 15 * 1024
FIRST_SCREEN = 40  # lines


def _python_snippets(page):
    """(line, tiny?, code) of every ```python block of ``page``."""
    lines = page.read_text().split("\n")
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = lines.index("```", i + 1)
            tiny = i > 0 and lines[i - 1].strip() == TINY_MARK
            found.append((i + 1, tiny, "\n".join(lines[i + 1:end])))
            i = end
        i += 1
    return found


def _tiny(code: str, settings: dict) -> str:
    """``code`` with its top-level assignments to the names in ``settings`` given those values instead."""
    tree = ast.parse(code)
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        names = [target] if isinstance(target, ast.Name) else list(getattr(target, "elts", []))
        if not all(isinstance(n, ast.Name) for n in names) or not any(n.id in settings for n in names):
            continue
        values = node.value.elts if len(names) > 1 else [node.value]
        node.value = ast.Tuple([ast.parse(settings[n.id], mode="eval").body if n.id in settings else v
                                for n, v in zip(names, values)], ast.Load()) if len(names) > 1 else \
            ast.parse(settings[names[0].id], mode="eval").body
    return ast.unparse(ast.fix_missing_locations(tree))


SNIPPET_PAGES = [p for p in PAGES if _python_snippets(p)]


def test_snippets_are_found():
    """The guide of the model code has its snippets, each marked to run on the tiny release."""
    assert PACK_ROOT / "docs" / "python.md" in SNIPPET_PAGES
    assert all(tiny for _, tiny, _ in _python_snippets(PACK_ROOT / "docs" / "python.md"))


@pytest.mark.parametrize("page", SNIPPET_PAGES, ids=lambda p: p.name)
def test_python_snippets_run(page, golden_dir, golden_cases, tmp_path):
    _, dataset_file, _ = build_toy_dataset(tmp_path / "dataset", golden_dir, golden_cases)
    c = golden_cases
    settings = {"root": repr(str(golden_dir / "checkpoint")), "device": "'cpu'", "dtype": "torch.float32",
                "width": str(c["width"]), "height": str(c["height"]), "frames": str(c["num_frames"]),
                "fps": str(float(c["fps"])), "steps": "2", "train_steps": "2", "dataset_file": repr(str(dataset_file))}
    program = [f"import sys\nsys.path.insert(0, {str(PACK_ROOT)!r})"]
    for line, tiny, code in _python_snippets(page):
        program.append(f"print('--- {page.name}:{line}', flush=True)\n" + (_tiny(code, settings) if tiny else code))
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run([sys.executable, "-c", "\n".join(program)], cwd=work, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, f"{page.name}: a snippet failed\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"


def test_tiny_settings_replace_only_the_settings():
    code = 'root = "MOVA-360p"\ndevice, dtype = "cuda", torch.bfloat16\nwidth = 640\nother = root\n'
    assert _tiny(code, {"root": "'x'", "device": "'cpu'", "width": "32"}).split("\n") == [
        "root = 'x'", "device, dtype = ('cpu', torch.bfloat16)", "width = 32", "other = root"]


def _test_command() -> str:
    ci = (PACK_ROOT / ".ci" / "run").read_text().strip().split("\n")[-1]
    assert ci.startswith("python3 -m venv .venv"), ci
    return ci


def test_readme_is_short_with_install_and_test_on_the_first_screen():
    readme = (PACK_ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_MAX_BYTES
    first = "\n".join(readme.split("\n")[:FIRST_SCREEN])
    assert _test_command() in first  # .ci/run runs exactly the README's test command
    assert "pip install -r comfyui-mova/requirements.txt" in first
    assert "docs/screenshots/" in readme


def test_links_lead_somewhere():
    """Every relative link of the README and the guides names a file that exists, and an anchor that file has."""
    def anchors(page):
        heads = re.findall(r"^#{1,6} (.+)$", page.read_text(), re.M)
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}

    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name}: link to {target}, which does not exist"
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), f"{page.name}: link to {target}, which has no such heading"


def test_workflow_guide_names_every_example_and_node():
    guide = (PACK_ROOT / "docs" / "workflows.md").read_text()
    for workflow in sorted((PACK_ROOT / "example_workflows").glob("*.json")):
        assert f"`{workflow.name}`" in guide, workflow.name
    for node in ALL_NODES:
        assert f"(`{node.node_id}`)" in guide, node.node_id
