"""End-to-end benchmark: `hf-ltbm bench end-to-end` (encoder, merge, prefill, TTFT, decode, memory per keep ratio).

Usage: python benchmarks/end_to_end.py [--scale cpu|7b] [--keep-ratios 1.0,0.75,0.5,0.25,0.1] [--out DIR] ...
(all options: `hf-ltbm bench --help`; `--scale 7b --device cuda` reproduces Qwen2-Audio-7B's shapes in bf16).
"""

import sys

from hf_ltbm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "end-to-end", *sys.argv[1:]]))
