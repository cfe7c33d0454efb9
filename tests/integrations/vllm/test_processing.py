"""The processor pieces that need no engine: shortening the placeholder runs of a prompt tokenised upstream."""

import pytest

from .conftest import require_vllm

require_vllm()

from hf_ltbm.integrations.vllm.processing import shortened_runs  # noqa: E402

A = 24  # the placeholder


def test_each_run_keeps_its_own_count_and_the_rest_of_the_prompt_is_kept():
    prompt = [1, 3, 25, A, A, A, A, 7, 25, A, A, A, 4, 5]
    assert shortened_runs(prompt, A, [2, 3]) == [1, 3, 25, A, A, 7, 25, A, A, A, 4, 5]
    assert shortened_runs(prompt, A, [4, 3]) == prompt  # the stock counts: unchanged
    assert shortened_runs(prompt, A, [1, 1]) == [1, 3, 25, A, 7, 25, A, 4, 5]
    assert prompt == [1, 3, 25, A, A, A, A, 7, 25, A, A, A, 4, 5]  # not mutated


@pytest.mark.parametrize(
    "prompt, counts, runs",
    [
        ([1, A, A, 2], [3], r"\[2\] tokens for 1 audio items that take \[3\]"),  # a run too short
        ([1, A, A, 2, A, 3], [1], r"\[2, 1\] tokens for 1 audio items"),  # more runs than items
        ([1, 2], [1], r"\[\] tokens for 1 audio items"),  # no placeholders
    ],
)
def test_a_prompt_without_one_long_enough_run_per_item_is_refused(prompt, counts, runs):
    with pytest.raises(ValueError, match=runs):
        shortened_runs(prompt, A, counts)
