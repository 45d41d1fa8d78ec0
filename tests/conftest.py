"""Shared fixtures. The pack is imported the way ComfyUI imports it: its folder as one package (tests/support/
mova_pack.py). The tests are laid out by kind: unit/ (plain Python, no ComfyUI), comfyui/ (a real ComfyUI from
COMFYUI_PATH: integration and browser), support/ (servers, fixtures, tools, data; on sys.path)."""

import json

import pytest

from mova_pack import golden_root

# the real ComfyUI of the integration tests (tests/comfyui/): its fixtures and helpers
pytest_plugins = ["comfy_integration"]


@pytest.fixture(scope="session")
def golden_dir():
    return golden_root()


@pytest.fixture(scope="session")
def golden_cases(golden_dir) -> dict:
    return json.loads((golden_dir / "cases.json").read_text())


@pytest.fixture(scope="session")
def golden_tensors(golden_dir) -> dict:
    from safetensors.torch import load_file
    return load_file(str(golden_dir / "cases.safetensors"))
