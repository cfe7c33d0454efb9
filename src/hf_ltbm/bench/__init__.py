"""Benchmarks of the real savings: the merge ops alone, end-to-end prefill and decoding, and KV-cache memory; each
prints ratios measured side by side in one run (`hf-ltbm bench`, `benchmarks/`)."""
