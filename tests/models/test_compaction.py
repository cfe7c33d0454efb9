import pytest
import torch

from hf_ltbm.models.compaction import compact_sequence, expanded_order, infer_left_padding, plan_placeholders

X = 9  # placeholder id


def test_plan_with_unmerged_count_keeps_first_m_of_each_unit():
    ids = torch.tensor([[1, X, X, X, 2, X, X], [0, 0, 1, X, X, X, X]])
    plan = plan_placeholders(ids == X, torch.tensor([3, 2, 4]), torch.tensor([1, 1, 2]))
    assert plan.compacts
    assert plan.unit_row.tolist() == [0, 0, 1]
    assert plan.fill.long().tolist() == [[0, 1, 0, 0, 0, 1, 0], [0, 0, 0, 1, 1, 0, 0]]


def test_plan_with_merged_count_fills_everything():
    ids = torch.tensor([[1, X, 2, X, X]])
    plan = plan_placeholders(ids == X, torch.tensor([4, 6]), torch.tensor([1, 2]))
    assert not plan.compacts and torch.equal(plan.fill, ids == X)


def test_plan_rejects_other_counts():
    with pytest.raises(ValueError, match="hold 2 audio placeholder tokens.*5 tokens before merging.*3 after"):
        plan_placeholders(torch.tensor([[True, True, False]]), torch.tensor([5]), torch.tensor([3]))


@pytest.mark.parametrize("left", [True, False])
def test_compaction_repads_on_the_same_side(left):
    keep = torch.tensor([[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]] if left else [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    embeds = torch.arange(10, dtype=torch.float32).view(2, 5, 1)
    labels = torch.arange(10).view(2, 5)
    e, m, lab, _ = compact_sequence(keep, left, embeds, mask, labels)
    assert e.shape == (2, 4, 1)
    if left:
        assert m.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]] and lab.tolist() == [[-100, 0, 1, 4], [6, 7, 8, 9]]
    else:
        assert m.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]] and lab.tolist() == [[0, 1, 4, -100], [5, 6, 7, 8]]


def test_padding_side_inference():
    assert infer_left_padding(torch.tensor([[0, 1], [1, 1]]), default_left=False)
    assert not infer_left_padding(torch.tensor([[1, 0], [1, 1]]), default_left=True)
    assert infer_left_padding(torch.ones(2, 2), default_left=True)
    with pytest.raises(ValueError, match="padding on both sides"):
        infer_left_padding(torch.tensor([[0, 1], [1, 0]]), default_left=True)


def test_expanded_order_repeats_each_rows_items_with_the_row():
    # rows 0 and 1 hold two and three items, row 2 none: beam search with two beams repeats rows as 0 0 1 1 2 2
    order = expanded_order(torch.tensor([0, 0, 1, 1, 1]), batch_size=3, expand_size=2)
    assert order.tolist() == [0, 1, 0, 1, 2, 3, 4, 2, 3, 4]
    assert expanded_order(torch.zeros(0, dtype=torch.long), batch_size=2, expand_size=3).tolist() == []
