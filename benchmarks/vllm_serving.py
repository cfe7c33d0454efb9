"""Serving benchmark: `hf-ltbm bench vllm` (requests/s, output tokens/s, time to first token per keep ratio under
vLLM's continuous batching; needs vLLM).

Usage: python benchmarks/vllm_serving.py [--scale cpu|7b] [--model CHECKPOINT] [--keep-ratios 1.0,0.5,0.25]
[--requests 16] [--out DIR] ... (all options: `hf-ltbm bench --help`).
"""

import sys

from hf_ltbm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "vllm", *sys.argv[1:]]))
