import pytest

from hf_ltbm.evaluation.multiple_choice import mmau_accuracy, string_match, word_tokens

CHOICES = ["Man", "Woman", "Child", "Robot"]


def test_word_tokens_lowercase_and_punctuation():
    assert word_tokens("The (A) Dog's bark!") == {"the", "a", "dog", "s", "bark"}


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("Woman", True),
        ("The speaker is a woman.", True),
        ("WOMAN", True),
        ("", False),  # empty = wrong
        ("   ...  ", False),  # no word tokens = wrong
        ("woman or man", False),  # names a wrong choice too
        ("a child", False),
        ("female", False),  # answer tokens missing
    ],
)
def test_string_match_single_word(prediction, expected):
    assert string_match("Woman", prediction, CHOICES) is expected


def test_partial_match_of_a_multi_word_answer_is_wrong():
    choices = ["electric guitar", "acoustic guitar", "piano", "violin"]
    assert not string_match("electric guitar", "electric", choices)  # partial: 'guitar' missing
    assert string_match("electric guitar", "It is an electric guitar.", choices)


def test_tokens_shared_with_the_answer_do_not_count_against_it():
    choices = ["electric guitar", "acoustic guitar", "piano", "violin"]
    # 'guitar' belongs to a wrong choice too, but also to the answer: allowed
    assert string_match("acoustic guitar", "acoustic guitar", choices)
    # 'electric' only belongs to a wrong choice: not allowed
    assert not string_match("acoustic guitar", "acoustic guitar, not electric", choices)


def test_a_choice_with_the_same_words_as_the_answer_is_not_a_distractor():
    assert string_match("Dog barking", "dog barking", ["Dog barking", "barking dog", "cat"])


def test_mmau_accuracy_groups_by_task_and_difficulty():
    records = [
        {"prediction": "Woman", "answer": "Woman", "choices": CHOICES, "task": "speech", "difficulty": "easy"},
        {"prediction": "man", "answer": "Woman", "choices": CHOICES, "task": "speech", "difficulty": "hard"},
        {"prediction": "robot", "answer": "Robot", "choices": CHOICES, "task": "sound", "difficulty": "hard"},
        {"prediction": None, "answer": "Child", "choices": CHOICES, "task": "music", "difficulty": "easy"},
    ]
    result = mmau_accuracy(records)
    assert result["metrics"]["accuracy"] == 50.0
    assert result["metrics"]["accuracy/speech"] == 50.0
    assert result["metrics"]["accuracy/sound"] == 100.0
    assert result["metrics"]["accuracy/music"] == 0.0
    assert result["metrics"]["accuracy/easy"] == 50.0
    assert result["metrics"]["accuracy/hard"] == 50.0
    assert result["counts"] == {
        "accuracy": 4,
        "accuracy/easy": 2,
        "accuracy/hard": 2,
        "accuracy/music": 1,
        "accuracy/sound": 1,
        "accuracy/speech": 2,
    }
    assert list(result["metrics"])[0] == "accuracy"


def test_mmau_accuracy_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        mmau_accuracy([])


def test_tricky_cases_agree_item_by_item_with_the_official_rule():
    """A fixture in MMAU's own format (`model_output`, as the official `evaluation.py` reads it), each case labelled by
    hand under the official rule: partial overlaps, answers that share words with distractors, letters, numbers,
    empty and punctuation-only outputs."""
    import json
    from pathlib import Path

    cases = json.loads((Path(__file__).parent / "data" / "mmau_tricky.json").read_text(encoding="utf-8"))
    assert len(cases) >= 15
    for case in cases:
        assert string_match(case["answer"], case["model_output"], case["choices"]) is case["official_correct"], case
    records = [{**case, "prediction": case["model_output"]} for case in cases]
    expected = 100.0 * sum(case["official_correct"] for case in cases) / len(cases)
    assert mmau_accuracy(records)["metrics"]["accuracy"] == expected
