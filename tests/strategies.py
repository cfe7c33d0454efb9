"""Hypothesis strategies shared by the property-based tests."""

from hypothesis import assume
from hypothesis import strategies as st

import hf_ltbm


@st.composite
def merge_settings(draw, every_field: bool = False):
    """Valid `AudioTokenMergeConfig`s of every method, with a keep ratio or a token budget; `every_field` also draws
    the window, space, key source, size-aware attention and norm preservation (combinations a method refuses are
    rejected)."""
    method = draw(st.sampled_from(hf_ltbm.available_methods()))
    fields = draw(
        st.one_of(st.builds(dict, keep_ratio=st.floats(0.01, 1.0)), st.builds(dict, num_tokens=st.integers(1, 60)))
    )
    if method == "random":
        fields["seed"] = draw(st.integers(0, 2**31 - 1))
    if every_field:
        if method == "ltbm":
            fields["window"] = draw(st.none() | st.integers(1, 9))
        fields["space"] = draw(st.sampled_from(hf_ltbm.config.MERGE_SPACES))
        fields["key_source"] = draw(st.sampled_from(hf_ltbm.config.KEY_SOURCES))
        fields["size_aware_attention"] = draw(st.booleans())
        fields["preserve_norm"] = draw(st.booleans())
    try:
        return hf_ltbm.AudioTokenMergeConfig(method=method, **fields)
    except ValueError:
        assume(False)
