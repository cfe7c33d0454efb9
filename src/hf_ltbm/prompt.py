"""The instruction hf-ltbm prompts with when a call gives audio and none (the pipeline, the command line): plain text,
importable without torch or transformers."""

from __future__ import annotations

__all__ = ["DEFAULT_PROMPT"]

DEFAULT_PROMPT = "Describe the audio."
"""Prompt used when a call gives audio and no `text`."""
