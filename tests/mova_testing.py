"""Helpers shared by the tests (importable as a module: pytest puts tests/ on sys.path)."""

import torch


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative L2 error ||out - ref|| / ||ref||, in float64."""
    out, ref = out.double(), ref.double()
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    return (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)).item()


GOLDEN_TOL = 1e-4
