"""Prompts: MOVA Prompt Builder (fields -> caption) and MOVA Prompt Enhance (a language model writes it)."""
