"""MOVA on several GPUs from the graph: the MOVA Parallel node (``node``, its spec in ``spec``), its settings
(``setup``, plain Python) and the glue that hands MOVA Sampler's and MOVA Guider's runs to the worker processes of
``mova_model.parallel`` (``comfy_run``). See docs/multi_gpu.md."""
