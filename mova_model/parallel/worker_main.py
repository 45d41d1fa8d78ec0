"""Entry point of one worker process: ``python worker_main.py`` with its settings in MOVA_PARALLEL_* variables
(``pool.WorkerPool`` starts it). It imports this pack's ``mova_model`` folder as a package of its own, without
ComfyUI or the pack's nodes."""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def import_model_package():
    """``mova_model`` (this file's grandparent folder) as the top-level package ``mova_model``."""
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != HERE]  # not this folder's files as modules
    root = HERE.parent
    spec = importlib.util.spec_from_file_location("mova_model", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["mova_model"] = module
    spec.loader.exec_module(module)


if __name__ == "__main__":
    import_model_package()
    from mova_model.parallel.worker import main

    sys.exit(main())
