"""What installing the pack changes in a user's environment: only what ComfyUI does not ship; and the registry
metadata is complete."""

import os
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What ComfyUI's own requirements.txt lists (v0.3.64 to v0.8.0) among the packages this pack imports.
COMFYUI_SHIPS = {"torch", "torchaudio", "torchvision", "numpy", "einops", "safetensors", "av", "pillow",
                 "comfyui-frontend-package", "transformers", "tokenizers", "sentencepiece", "aiohttp", "pyyaml",
                 "scipy", "tqdm", "psutil"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_requirements_hold_only_what_comfyui_does_not_ship():
    names = {_name(r) for r in _requirements()}
    assert names == {"ftfy", "yunchang", "gguf"}
    assert not names & COMFYUI_SHIPS
    comfyui = os.environ.get("COMFYUI_PATH")
    if comfyui:  # the ComfyUI at hand: none of its own requirements again
        theirs = {_name(r) for r in (Path(comfyui) / "requirements.txt").read_text().splitlines()
                  if r.strip() and not r.startswith("#")}
        assert not names & theirs


def test_pyproject_matches_requirements_and_is_complete():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    assert sorted(_name(d) for d in project["dependencies"]) == sorted(_name(r) for r in _requirements())
    for field in ("name", "version", "description", "license", "requires-python"):
        assert project.get(field), field
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    # no public repository yet: no URL may present the model's repository as the pack's
    urls = project["urls"]
    assert all(url.startswith("https://") for url in urls.values())
    assert "github.com/OpenMOSS/MOVA" not in urls.get("Repository", "")
    for field in ("PublisherId", "DisplayName", "requires-comfyui"):
        assert comfy.get(field), field
    extras = {name: {_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    # the CPU suite runs without ComfyUI: what ComfyUI would bring is in the test extra, and nothing else
    assert extras["test"] == {"torch", "torchaudio", "safetensors", "einops", "av", "pytest", "pillow", "numpy", "ftfy",
                               "yunchang", "gguf"}
    # the browser test's tools and the real-ComfyUI runs, for ComfyUI's own Python, in extras of their own
    assert extras["browser"] == {"pytest", "playwright", "comfyui-frontend-package"}
    assert extras["comfyui"] == {"pytest"}
