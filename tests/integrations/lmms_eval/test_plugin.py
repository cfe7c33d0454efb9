"""hf-ltbm's lmms-eval models through lmms-eval's own entry point, on a tiny local task in lmms-eval's task format:
the predictions equal hf-ltbm's `generate()` on the same items, with and without merging.

Needs lmms-eval (`pip install "hf-ltbm[lmms]"`); skipped without it unless HF_LTBM_REQUIRE_LMMS=1.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from transformers.utils import is_torchvision_available

from hf_ltbm.integrations.lmms_eval import MODELS

if os.environ.get("HF_LTBM_REQUIRE_LMMS") == "1":
    import lmms_eval  # noqa: F401
else:
    pytest.importorskip("lmms_eval", reason="the lmms-eval plugin tests need lmms-eval (pip install 'hf-ltbm[lmms]')")

from hf_ltbm.integrations.lmms_eval.model import audio_chat, merge_setting  # noqa: E402

from ...encoding import encode  # noqa: E402

TASK_YAML = """
task: hf_ltbm_tiny_audio
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_audio
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: exact
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""

TASK_UTILS = """
import soundfile as sf


def doc_to_audio(doc):
    samples, rate = sf.read(doc["audio_path"], dtype="float32")
    return [{"array": samples, "sampling_rate": rate}]  # what a datasets Audio column gives


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact": float(results[0].strip() == doc["answer"])}
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms-task")
    items = []
    for i, seconds in enumerate((2.0, 3.5, 1.0)):
        t = np.arange(int(16000 * seconds)) / 16000
        wave = (0.3 * np.sin(2 * np.pi * (300 + 150 * i) * t)).astype(np.float32)
        sf.write(str(root / f"clip{i}.wav"), wave, 16000)
        items.append(
            {"id": i, "audio_path": str(root / f"clip{i}.wav"), "question": "describe the sound", "answer": "x"}
        )
    (root / "items.json").write_text("\n".join(json.dumps(item) for item in items))
    (root / "hf_ltbm_tiny_audio.yaml").write_text(TASK_YAML.format(items=root / "items.json"))
    (root / "utils.py").write_text(TASK_UTILS)
    return root


def _direct(folder, setting, audio_paths):
    """hf-ltbm's generate() on the same chats (the merging processor and model, greedy, 4 tokens)."""
    from transformers import AutoModelForSeq2SeqLM, AutoProcessor

    import hf_ltbm
    from hf_ltbm.tiny import TINY_MODELS, build_tiny_model

    if folder in TINY_MODELS:
        model, processor = build_tiny_model(folder, audio_token_merge=setting)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, audio_token_merge=setting).eval()
        processor = AutoProcessor.from_pretrained(folder, audio_token_merge=setting)
    texts = []
    for path in audio_paths:
        inputs = encode(processor, "describe the sound", [hf_ltbm.load_audio(path, 16000)])
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        texts.append(processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0])
    return texts


@pytest.mark.parametrize("setting", [None, {"method": "ltbm", "keep_ratio": 0.5, "window": 3}])
@pytest.mark.parametrize("backbone", sorted(MODELS))
def test_lmms_eval_predictions_equal_generate(backbone, setting, task_dir, tmp_path):
    _predictions_equal_generate(backbone, setting, task_dir, tmp_path)


def test_lmms_eval_takes_a_norm_preserving_setting(task_dir, tmp_path):
    setting = {"method": "pool", "keep_ratio": 0.5, "preserve_norm": True}  # `preserve_norm=True` in --model_args
    _predictions_equal_generate("hf_ltbm_qwen2_audio", setting, task_dir, tmp_path)


def _predictions_equal_generate(backbone, setting, task_dir, tmp_path):
    from hf_ltbm.tiny import build_tiny_model

    tiny = "tiny-random-" + backbone.removeprefix("hf_ltbm_").replace("_", "-")
    if tiny == "tiny-random-qwen2-5-omni" and not is_torchvision_available():
        # the saved processor would load its video processor, which needs torchvision: the tiny model by name
        folder = tiny
    else:
        model, processor = build_tiny_model(tiny)
        folder = tmp_path / "model"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    model_args = f"pretrained={folder},device=cpu"
    if setting is not None:
        model_args += "," + ",".join(f"{k}={v}" for k, v in setting.items())
    command = [sys.executable, "-m", "lmms_eval", "--model", backbone, "--model_args", model_args]
    command += ["--tasks", "hf_ltbm_tiny_audio", "--include_path", str(task_dir), "--batch_size", "2"]
    command += ["--output_path", str(tmp_path / "out"), "--log_samples"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    found = list((tmp_path / "out").rglob("*samples_hf_ltbm_tiny_audio*.jsonl"))
    assert len(found) == 1, (run.stdout + run.stderr)[-3000:]
    (samples,) = found
    rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])
    predictions = [
        r["filtered_resps"][0] if isinstance(r["filtered_resps"], list) else r["filtered_resps"] for r in rows
    ]
    items = [json.loads(line) for line in (task_dir / "items.json").read_text().splitlines()]
    paths = [items[row["doc_id"]]["audio_path"] for row in rows]
    assert len(predictions) == 3
    assert predictions == _direct(str(folder), setting, paths)


def test_model_args_map_to_the_merge_setting():
    assert merge_setting(None) is None and merge_setting("none") is None
    setting = merge_setting("segment_topk", keep_ratio=0.25, options='{"num_segments": 4}')
    assert setting.method == "segment_topk" and setting.options == {"num_segments": 4}
    with pytest.raises(ValueError, match=r"set a merge setting but `method` is None"):
        merge_setting(None, keep_ratio=0.5)
    with pytest.raises(ValueError, match=r"`keep_ratio` must be in \(0, 1\]"):
        merge_setting("ltbm", keep_ratio=2)
    with pytest.raises(TypeError, match=r"Unknown --model_args \['keep'\]; hf-ltbm's models take pretrained"):
        merge_setting("ltbm", keep=0.5)
    assert merge_setting("ltbm", size_aware=True).size_aware_attention is True
    assert merge_setting("ltbm", preserve_norm=True).preserve_norm is True


def test_chats_keep_audio_and_text_and_refuse_images():
    chat = [
        {
            "role": "user",
            "content": [
                {"type": "video", "url": {"array": [0.0], "sampling_rate": 16000}},  # lmms-eval's label for a dict
                {"type": "audio", "url": "clip.wav"},
                {"type": "text", "text": "what is it ?"},
            ],
        }
    ]
    (message,) = audio_chat(chat)
    assert [part["type"] for part in message["content"]] == ["audio", "audio", "text"]
    with pytest.raises(ValueError, match="take audio and text; this chat has a image part"):
        audio_chat([{"role": "user", "content": [{"type": "image", "url": "x.png"}]}])
