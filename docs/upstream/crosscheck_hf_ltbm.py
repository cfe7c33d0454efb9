"""Compares the merge added to transformers by the patch with hf-ltbm's own implementation.

Run it with the patched transformers first on the import path and hf-ltbm installed:

    PYTHONPATH=patched/src python crosscheck_hf_ltbm.py

For LTBM (windows 1, 2, 3, 5, 16) and Global Merge at keep ratios 0.5, 0.25 and 0.1, on batches of temporally
correlated random features (AR(1), correlation 0.9 between neighbours; widths 64 and 1280) with ragged lengths (up
to one 30 s window, 750 tokens), it requires the same number of output tokens as `hf_ltbm.output_length` and the
same assignment of input tokens to merged tokens. The two implementations compute cosine similarities in a
different order (a dense masked matrix here, shifted dot products in hf-ltbm), so two candidates whose scores tie to
within float32 rounding may go either way (this happens on random walks, whose neighbours all have cosine ~0.999):
a case passes when at least 99% of its tokens are assigned alike, and where assignments agree the merged tokens must
match to 1e-5. On the data used here every case is identical. Exits 0 with a `SKIPPED` line when hf-ltbm cannot be
imported.
"""

from __future__ import annotations

import sys

import torch


def main() -> int:
    try:
        import hf_ltbm
    except ImportError as error:
        print(f"SKIPPED: hf_ltbm cannot be imported ({error})")
        return 0
    import transformers
    from transformers.models.qwen2_audio.modeling_qwen2_audio import _bipartite_merge_slots, merge_audio_tokens

    print(f"transformers {transformers.__version__} from {transformers.__file__}; hf_ltbm from {hf_ltbm.__file__}")
    generator = torch.Generator().manual_seed(0)
    cases = failures = identical = 0
    for dim in (64, 1280):
        for lengths in ([750, 500, 13, 1], [750], [301, 2]):
            # a stationary AR(1) process: neighbouring tokens are similar (correlation 0.9), as in encoder outputs
            noise = torch.randn(len(lengths), max(lengths), dim, generator=generator)
            features = torch.empty_like(noise)
            features[:, 0] = noise[:, 0]
            for t in range(1, noise.shape[1]):  # builds test data only
                features[:, t] = 0.9 * features[:, t - 1] + (1 - 0.9**2) ** 0.5 * noise[:, t]
            for method, window in [("ltbm", w) for w in (1, 2, 3, 5, 16)] + [("global", None)]:
                for keep_ratio in (0.5, 0.25, 0.1):
                    options = {"window": window} if method == "ltbm" else {}
                    reference = hf_ltbm.merge_tokens(
                        features, lengths=lengths, method=method, keep_ratio=keep_ratio, **options
                    )
                    setting = {"method": method, "keep_ratio": keep_ratio, **options}
                    merged, counts = merge_audio_tokens(features, torch.tensor(lengths), setting)
                    slots = _bipartite_merge_slots(features, torch.tensor(lengths), counts, window)
                    cases += 1
                    name = f"dim={dim} lengths={lengths} {method} window={window} keep={keep_ratio}"
                    if counts.tolist() != reference.lengths.tolist():
                        failures += 1
                        print(f"FAIL {name}: counts {counts.tolist()} != {reference.lengths.tolist()}")
                        continue
                    agree = float((slots == reference.assignment).float().mean())
                    if agree < 0.99:
                        failures += 1
                        print(f"FAIL {name}: only {agree:.2%} of the tokens are assigned alike")
                        continue
                    rows = (slots == reference.assignment).all(dim=1)
                    width = merged.shape[1]
                    if not torch.allclose(merged[rows], reference.tokens[rows, :width], atol=1e-5):
                        failures += 1
                        print(f"FAIL {name}: merged tokens differ")
                        continue
                    identical += bool(rows.all())
    print(
        f"{cases} cases: {cases - failures} agree with hf-ltbm ({identical} with identical assignments), "
        f"{failures} fail"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
