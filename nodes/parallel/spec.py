"""MOVA Parallel's spec (plain data; the node in node.py). The modes come from the plan that checks them."""

from __future__ import annotations

from ...mova_model.parallel.plan import MODES
from ..spec_types import SAMPLER_OPTIONS, NodeSpec, Socket, Widget

PARALLEL_MODES = MODES

# Several GPUs of one machine (nodes/parallel): worker processes run the MOVA Sampler's or MOVA Guider's sampling.
PARALLEL = NodeSpec(
    node_id="MovaParallel",
    display_name="MOVA Parallel",
    description="Runs the MOVA Sampler (or the MOVA Guider) on several GPUs of this machine: one worker process per "
    "GPU keeps the experts loaded between queued runs. ulysses splits the video tokens over the GPUs, cfg runs the "
    "prompt's and the negative prompt's passes side by side, cfg+ulysses does both; shard_weights splits the video "
    "experts' weights over the GPUs (FSDP2). Connect its options output to the sampler's options input.",
    inputs=(
        Widget("devices", "STRING", default="all",
               tooltip="The GPUs, one worker each: all (every GPU ComfyUI sees), or numbers such as 0,1 or 0,1,2,3. "
               "cpu:2 runs 2 workers on the CPU (gloo), to try a workflow on a machine without GPUs."),
        Widget("mode", "COMBO", default="ulysses", options=PARALLEL_MODES,
               tooltip="ulysses: each GPU holds a share of the video tokens; the number of GPUs must divide the "
               "video expert's 40 heads (2, 4, 5 or 8). cfg: the prompt's and the negative prompt's passes on 2 "
               "GPUs (3 with dual CFG's third pass). cfg+ulysses: 2 CFG groups, each splitting the tokens (4, 8, "
               "10 or 16 GPUs)."),
        Widget("shard_weights", "BOOLEAN", default=False,
               tooltip="Split each video expert's weights over the GPUs (FSDP2): a GPU holds 1/N of them plus one "
               "block at a time, so two 24 GB cards can hold an expert. Costs one weight transfer per block and "
               "pass. Not with compile or block swap."),
        Widget("swap_blocks", "INT", default=0, min=0, max=100,
               tooltip="Block swap in every worker: this many of each video expert's blocks stay in the host's "
               "memory and are streamed to the GPU per step. 0 keeps all on the GPU. Not with shard_weights."),
        Widget("keep_loaded", "BOOLEAN", default=True,
               tooltip="Keep the workers and their loaded experts between queued runs (the next run starts at once). "
               "Off: the workers stop after each run and free their GPUs. ComfyUI's Unload Models stops them too."),
        Socket("options", SAMPLER_OPTIONS, "Optional: MOVA Sampler Options' settings, passed on with the parallel "
               "setup. Unconnected: the official settings.", optional=True),
    ),
    outputs=(Socket("options", SAMPLER_OPTIONS, "The sampler options with the parallel setup: connect to the MOVA "
                    "Sampler's (or MOVA Guider's) options input."),),
)
