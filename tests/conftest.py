"""Shared fixtures. The pack is imported the way ComfyUI imports it: its folder as one package."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_mova"


def _import_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


_import_pack()

# the real ComfyUI of the integration tests (tests/test_comfyui_*.py): its fixtures and helpers
pytest_plugins = ["comfy_integration"]


def golden_root() -> Path:
    """The golden set: $MOVA_GOLDEN_DIR when set (a folder with cases.json, or one holding tiny/), else our copy."""
    env = os.environ.get("MOVA_GOLDEN_DIR")
    root = Path(env) if env else PACK_ROOT / "tests" / "data" / "golden" / "tiny"
    if not (root / "cases.json").exists() and (root / "tiny" / "cases.json").exists():
        root = root / "tiny"
    if not (root / "cases.json").exists():
        raise FileNotFoundError(f"golden set not found: {root} has no cases.json (check MOVA_GOLDEN_DIR)")
    return root


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return golden_root()


@pytest.fixture(scope="session")
def golden_cases(golden_dir) -> dict:
    return json.loads((golden_dir / "cases.json").read_text())


@pytest.fixture(scope="session")
def golden_tensors(golden_dir) -> dict:
    from safetensors.torch import load_file
    return load_file(str(golden_dir / "cases.safetensors"))
