"""MOVA on several GPUs from the graph: the MOVA Parallel node (``parallel_node``), its settings (``setup``, plain
Python) and the glue that hands MOVA Sampler's and MOVA Guider's runs to the worker processes of
``mova_model.parallel`` (``run``). See docs/multi_gpu.md."""
