"""The pack's one way of writing a file (``mova_model/atomic_write.py``: a unique temporary file beside the target,
fsync, rename), loaded by path for the scripts here, which run with the standard library only (no torch)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "mova_model" / "atomic_write.py"
_NAME = "mova_atomic_write"

if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])

WriteError = sys.modules[_NAME].WriteError
write_bytes = sys.modules[_NAME].write_bytes
write_text = sys.modules[_NAME].write_text
