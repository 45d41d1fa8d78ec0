"""The ComfyUI node layer. ``spec``, ``handles``, ``model_files``, ``condition``, ``sampling``, ``text``
and ``audio_decode`` are plain Python (tested without ComfyUI); ``*_node.py``, ``loader_nodes``,
``comfy_io`` and ``extension`` import ComfyUI and are loaded only inside it."""
