"""Which parallel run the model code is running in: none (one process) unless a worker sets one.

The joint forward asks ``current_sequence_parallel()`` whether it holds a slice of the video tokens, and the
guidance asks ``current_cfg_parallel()`` whether its passes are spread over processes; both are None outside
``parallel_run``, so one-process runs are untouched (the same pattern as ``attention.use_attention_backend``).
"""

from __future__ import annotations

import contextlib

_current = {"sequence": None, "cfg": None}


def current_sequence_parallel():
    """The ``SequenceParallel`` of the running forward, or None."""
    return _current["sequence"]


def current_cfg_parallel():
    """The ``CfgParallel`` of the running step, or None."""
    return _current["cfg"]


@contextlib.contextmanager
def parallel_run(sequence=None, cfg=None):
    """Run the enclosed sampling with the video tokens split by ``sequence`` and the guidance passes by ``cfg``
    (either may be None), then restore what was set before."""
    previous = dict(_current)
    _current.update(sequence=sequence, cfg=cfg)
    try:
        yield
    finally:
        _current.update(previous)
