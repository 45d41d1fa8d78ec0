"""The pack under test, imported the way ComfyUI imports it (its folder as one package, ``comfyui_mova``), and where
the golden set is. Importing this module imports the pack; tests, helpers and scripts all go through it."""

import importlib.util
import os
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "comfyui_mova"
TESTS = PACK_ROOT / "tests"
DATA = TESTS / "support" / "data"


def import_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


import_pack()


def golden_root() -> Path:
    """The golden set: $MOVA_GOLDEN_DIR when set (a folder with cases.json, or one holding tiny/), else our copy."""
    env = os.environ.get("MOVA_GOLDEN_DIR")
    root = Path(env) if env else DATA / "golden" / "tiny"
    if not (root / "cases.json").exists() and (root / "tiny" / "cases.json").exists():
        root = root / "tiny"
    if not (root / "cases.json").exists():
        raise FileNotFoundError(f"golden set not found: {root} has no cases.json (check MOVA_GOLDEN_DIR)")
    return root
