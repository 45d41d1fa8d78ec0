"""The ComfyUI node layer, in wings by feature: ``loaders``, ``conditioning``, ``sampling``, ``native``, ``prompts``,
``training``, ``lora``. In every wing ``node.py`` holds the wing's ComfyUI nodes and ``spec.py`` their specs (plain
data: inputs, outputs, tooltips); ``comfy_*.py`` is other code that needs ComfyUI; every other module is plain
Python, imported and tested without ComfyUI (tests/unit/test_layout.py holds the rule). Shared here: the spec types
(``spec_types``), the catalog of every node (``catalog``), the socket payloads (``handles``), the input checks
(``input_values``, ``media_values``), the joint latent in ComfyUI's audio-video form (``av_latent``), and the ComfyUI
glue (``comfy_io``: schemas; ``comfy_attention``; ``comfy_extension``: the node list)."""
