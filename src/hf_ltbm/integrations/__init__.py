"""Integrations of hf-ltbm with other engines; each imports its engine lazily (`import hf_ltbm` needs none of them).

- `hf_ltbm.integrations.vllm`: a vLLM plugin that serves merged audio tokens (entry point `vllm.general_plugins`).
"""
