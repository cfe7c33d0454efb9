"""transformers' own `ModelTesterMixin` (from the installed release's sdist, `harness.py`) on every hf-ltbm base and
generation class, with no merge setting and with each averaging method at keep ratio 1.0: both promise upstream's
behaviour, so every common test that upstream's classes pass must pass here too.

A test is skipped only by name, below, with the reason; none is skipped to hide a difference in behaviour.
`HF_LTBM_UPSTREAM_BASELINE=1` also runs the suite on the upstream classes themselves (the baseline the counts in
docs/parity.md compare with).
"""

from __future__ import annotations

import os
import unittest
from unittest import mock

import pytest

import hf_ltbm

from . import harness
from .testers import FAMILIES, SETTINGS, AudioModelTester

try:
    modeling_common, configuration_common = harness.load()
except harness.UpstreamTestsUnavailable as error:
    if os.environ.get("HF_LTBM_REQUIRE_UPSTREAM_TESTS") == "1":
        raise
    pytest.skip(f"transformers' common model tests are unavailable: {error}", allow_module_level=True)

ModelTesterMixin = modeling_common.ModelTesterMixin
GenerationTesterMixin = modeling_common.GenerationTesterMixin  # the harness's stand-in (see harness.py)
ConfigTester = configuration_common.ConfigTester

# The common tests exercise deprecated names on purpose (e.g. `past_key_values=` in test_bc_cache_name_forward, which
# checks that the deprecation warning is raised): warnings are not errors here, as in transformers' own CI.
pytestmark = [
    pytest.mark.filterwarnings("default::FutureWarning", "default::DeprecationWarning"),
    pytest.mark.allows_deprecation,
]


_UPSTREAM_FAILS = "upstream's own class fails it too with these inputs ({}), so it compares nothing"
_AUDIO_REPLACES_EMBEDS = _UPSTREAM_FAILS.format(
    "the audio placeholders' embeddings are replaced by the audio features, so input_ids and their embeddings "
    "cannot give the same output; transformers' own tests of these families skip it for that reason"
)
_FLAT_THINKER = hf_ltbm.Qwen2_5OmniThinkerLTBMModel is None  # transformers 5.19: the thinker is one flat class

#: Per family, the common tests that are skipped, each with its reason; a name covers its parameterized and variant
#: tests (`test_x_0`, `test_x_use_reentrant_false`, ...). Every one fails for upstream's classes as well, on the
#: release where it is listed: `HF_LTBM_UPSTREAM_BASELINE=1` runs the suite on upstream's classes, with no skip.
FAMILY_SKIPS: dict[str, dict[str, str]] = {
    "qwen2_audio": {"test_inputs_embeds_matches_input_ids": _AUDIO_REPLACES_EMBEDS},
    "audioflamingo3": {"test_inputs_embeds_matches_input_ids": _AUDIO_REPLACES_EMBEDS},
    "musicflamingo": {"test_inputs_embeds_matches_input_ids": _AUDIO_REPLACES_EMBEDS},
    "voxtral": {"test_inputs_embeds_matches_input_ids": _AUDIO_REPLACES_EMBEDS},
    "glmasr": {"test_inputs_embeds_matches_input_ids": _AUDIO_REPLACES_EMBEDS},
    "qwen2_5_omni_thinker": {
        "test_resize_tokens_embeddings": _UPSTREAM_FAILS.format(
            "after resizing, the test's clamped input_ids lose the image placeholder: 'Image features and image "
            "tokens do not match, tokens: 0'"
        ),
        "test_training_gradient_checkpointing": _UPSTREAM_FAILS.format(
            "the audio encoder's `audio_bos_eos_token` embedding is never used in a forward, so it gets no gradient"
        ),
        **(
            {
                "test_model_base_model_prefix": _UPSTREAM_FAILS.format(
                    "on this release the thinker is one flat class without a base model, so its `base_model` is itself"
                )
            }
            if _FLAT_THINKER
            else {"test_inputs_embeds_matches_input_ids": _AUDIO_REPLACES_EMBEDS}
        ),
    },
}
#: Per family: attributes of the test class that describe what the mixin cannot infer.
FAMILY_ATTRIBUTES: dict[str, dict] = {
    # The thinker's audio encoder returns its tokens packed over the batch (`[sum(tokens), D]`), and its vision
    # encoder the merged patches (`[patches / merge_size**2, out_hidden_size]`), not `[B, T, hidden_size]`: the
    # mixin's shape checks do not apply (its type and layer-count checks still run).
    "qwen2_5_omni_thinker": {
        "skip_test_audio_features_output_shape": True,
        "skip_test_image_features_output_shape": True,
        "skip_test_video_features_output_shape": True,
    },
}


def _name_mapping_patches(classes: tuple[type, ...]) -> list:
    """Patches that add each merging class to every name-keyed model mapping of transformers
    (`MODEL_MAPPING_NAMES`, `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`, ...) that names the upstream class it extends: the
    common tests pick labels and skip base models by looking a class's name up there."""
    from transformers.models.auto import modeling_auto

    patches = []
    for attribute, mapping in vars(modeling_auto).items():
        if not (attribute.endswith("_MAPPING_NAMES") and isinstance(mapping, dict)):
            continue
        names = {
            name
            for value in mapping.values()
            for name in (value if isinstance(value, (list, tuple)) else (value,))
            if isinstance(name, str)
        }
        extra = {f"hf_ltbm-{cls.__name__}": cls.__name__ for cls in classes if cls._upstream_class.__name__ in names}
        if extra:
            patches.append(mock.patch.dict(mapping, extra))
    return patches


def _make_test_class(family_name: str, setting_name: str, upstream: bool = False) -> type:
    family = FAMILIES[family_name]
    setting = SETTINGS[setting_name]
    classes = family.classes()
    if upstream:
        classes = tuple(cls._upstream_class for cls in classes)

    class Test(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
        all_model_classes = classes
        _is_composite = True

        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            if not upstream:
                for patch in _name_mapping_patches(classes):
                    patch.start()
                    cls.addClassCleanup(patch.stop)

        def setUp(self) -> None:
            self.model_tester = AudioModelTester(self, family, setting)
            self.config_tester = ConfigTester(
                self, config_class=type(self.model_tester.get_config()), has_text_modality=False
            )

        def test_config(self) -> None:
            self.config_tester.run_common_tests()

    for name, value in FAMILY_ATTRIBUTES.get(family_name, {}).items():
        setattr(Test, name, value)
    # the baseline runs every test on upstream's classes: it shows that each skip below fails there too
    for name, reason in {} if upstream else FAMILY_SKIPS.get(family_name, {}).items():
        for attribute in dir(Test):
            if attribute == name or attribute.startswith(name + "_"):  # with its parameterized / variant tests
                setattr(Test, attribute, unittest.skip(reason)(getattr(Test, attribute)))
    label = "Upstream" if upstream else setting_name.capitalize()
    Test.__name__ = Test.__qualname__ = f"Test{''.join(p.capitalize() for p in family_name.split('_'))}{label}"
    return Test


for _family in FAMILIES:
    for _setting in SETTINGS:
        _cls = _make_test_class(_family, _setting)
        globals()[_cls.__name__] = _cls
    if os.environ.get("HF_LTBM_UPSTREAM_BASELINE") == "1":
        _cls = _make_test_class(_family, "none", upstream=True)
        globals()[_cls.__name__] = _cls
del _cls
