"""MOVA on several GPUs of one machine (or several CPU processes): plain PyTorch, no ComfyUI import.

- ``plan``: the modes (Ulysses over the video tokens, CFG parallel, FSDP2 weight sharding), their degrees and the
  checks that refuse what does not compose, before anything heavy runs;
- ``sequence`` / ``cfg`` / ``fsdp``: the three mechanisms, on torch.distributed (NCCL on GPUs, gloo on the CPU)
  and yunchang's all-to-all; ``context`` tells the joint forward and the guidance which of them a run uses;
- ``pool`` (the host's side) and ``worker`` (each process): persistent worker processes that keep the experts
  loaded between runs and take sampling jobs; ``channel`` carries the jobs.

See docs/multi_gpu.md.
"""
