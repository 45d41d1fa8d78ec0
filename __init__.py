"""MOVA for ComfyUI: the pack's entry point.

ComfyUI calls ``comfy_entrypoint()`` (V3 API). Without ComfyUI (tests, scripts) the import
still succeeds and ``comfy_entrypoint`` raises a clear error if called.
"""

try:
    from comfy_api.latest import ComfyExtension  # noqa: F401
    _HAS_COMFY = True
except ImportError:  # plain Python: tests, the converter, benchmarks
    _HAS_COMFY = False


async def comfy_entrypoint():
    """Return the pack's ComfyExtension (called by ComfyUI)."""
    if not _HAS_COMFY:
        raise RuntimeError("comfy_api is not importable: load this pack from inside ComfyUI.")
    from .nodes.comfy_extension import MovaExtension
    return MovaExtension()
