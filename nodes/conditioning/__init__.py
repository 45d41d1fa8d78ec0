"""Conditioning: MOVA Text Encode, MOVA Conditioning (with its modes: first + last frame, given sound or video) and
MOVA Extend / Join (longer clips)."""
