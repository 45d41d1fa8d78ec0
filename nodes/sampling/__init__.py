"""Sampling: MOVA Sampler, MOVA Sampler Options and MOVA Audio Decode."""
