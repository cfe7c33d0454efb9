"""Merge-op benchmark: `hf-ltbm bench merge-ops` (time and peak memory per method and N, dense ToMe reference).

Usage: python benchmarks/merge_ops.py [--sizes 250,750,3000,15000] [--batches 1,8] [--dim 1280] [--out DIR] ...
(all options: `hf-ltbm bench --help`).
"""

import sys

from hf_ltbm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "merge-ops", *sys.argv[1:]]))
