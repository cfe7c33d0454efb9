import pytest

from hf_ltbm.evaluation.data import EvalItem
from hf_ltbm.evaluation.tasks import TASKS, get_task


def test_registry_and_defaults():
    assert list(TASKS) == ["clotho", "audiocaps", "mmau", "librispeech_test_clean", "librispeech_test_other"]
    assert get_task("clotho").resolved_source == "mteb/Clotho"
    assert get_task("audiocaps").resolved_source == "OpenSound/AudioCaps"
    assert get_task("mmau").resolved_source == "Sakshi113/MMAU"
    assert get_task("clotho", "/data/clotho").resolved_source == "/data/clotho"
    assert get_task("clotho").primary_metric == "CIDEr-D" and get_task("mmau").primary_metric == "accuracy"
    assert get_task("librispeech_test_other").resolved_source == "openslr/librispeech_asr"
    assert get_task("librispeech_test_clean").primary_metric == "WER"
    assert [get_task(name).default_max_new_tokens for name in TASKS] == [64, 64, 64, 256, 256]


def test_speech_recognition_prompts_are_per_backbone_unless_given():
    task, item = get_task("librispeech_test_clean"), EvalItem("u", None, references=["HELLO"])
    assert task.prompt_for(item, "audioflamingo3") == "Transcribe the input speech."
    assert task.prompt_for(item, "qwen2_audio") == "Recognize the speech and give me the transcription."
    assert task.prompt_template("some_other_backbone") == task.prompt_template(None) == task.default_prompt
    given = get_task("librispeech_test_other", prompt="Write down what is said.")
    assert {given.prompt_for(item, m) for m in ("audioflamingo3", "qwen2_audio")} == {"Write down what is said."}
    # captioning and MMAU prompts are the same for every backbone
    assert get_task("clotho").prompt_template("audioflamingo3") == get_task("clotho").prompt_template("qwen2_audio")
    assert task.record_fields(item) == {"reference": "HELLO"}


def test_mmau_prompt_lists_the_choices():
    item = EvalItem("q", None, question="What is heard?", choices=["a dog", "a cat"], answer="a dog")
    prompt = get_task("mmau").prompt_for(item)
    assert prompt.startswith("What is heard?\n") and "(A) a dog\n(B) a cat" in prompt
    custom = get_task("mmau", prompt="Q: {question} Options: {choices}").prompt_for(item)
    assert custom == "Q: What is heard? Options: (A) a dog\n(B) a cat"


def test_captioning_prompt_is_configurable():
    assert get_task("clotho", prompt="Caption it.").prompt_for(EvalItem("x", None)) == "Caption it."
    assert "caption" in get_task("audiocaps").prompt_for(EvalItem("x", None)).lower()


def test_record_fields_carry_what_scoring_needs():
    original = {"id": "q", "question": "?", "choices": ["x", "y"], "answer": "x", "sub-category": "Counting"}
    item = EvalItem(
        "q",
        None,
        question="?",
        choices=["x", "y"],
        answer="x",
        task="sound",
        difficulty="easy",
        source_record=original,
    )
    assert get_task("mmau").record_fields(item) == {
        "answer": "x",
        "choices": ["x", "y"],
        "task": "sound",
        "difficulty": "easy",
        "source_record": original,  # for the official evaluation's input format
    }
    assert get_task("clotho").record_fields(EvalItem("c", None, references=["r"])) == {"references": ["r"]}


def test_errors():
    with pytest.raises(ValueError, match="Unknown task 'coco'; available: clotho, audiocaps, mmau"):
        get_task("coco")
    with pytest.raises(ValueError, match=r"\{question\}"):
        get_task("mmau", prompt="Answer it.")
