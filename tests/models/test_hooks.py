"""The hook protocol (`hf_ltbm.models.hooks`): every hook is declared once, documented, and inherited by the mixins;
the backbones provide the required ones and override nothing of the shared machinery that is not a declared hook."""

import inspect

import pytest
from transformers import GenerationMixin, PreTrainedModel

from hf_ltbm.backbones import BACKBONES
from hf_ltbm.models import AudioTokenMergeGenerationMixin, AudioTokenMergeModelMixin
from hf_ltbm.models.hooks import OPTIONAL_HOOKS, REQUIRED_HOOKS, AudioTokenMergeHooks, GenerationHooks, ModelHooks

DECLARED = {name for hooks in (REQUIRED_HOOKS, OPTIONAL_HOOKS) for names in hooks.values() for name in names}
MIXINS = (AudioTokenMergeModelMixin, AudioTokenMergeGenerationMixin)
CLASSES = sorted(
    {cls for backbone in BACKBONES.values() for cls in (backbone.base_model, backbone.generation_model) if cls},
    key=lambda cls: cls.__name__,
)


def test_each_hook_is_declared_once_with_a_docstring_on_its_protocol_class():
    declared = [name for hooks in (REQUIRED_HOOKS, OPTIONAL_HOOKS) for names in hooks.values() for name in names]
    assert len(declared) == len(DECLARED)
    for hooks in (REQUIRED_HOOKS, OPTIONAL_HOOKS):
        for protocol, names in hooks.items():
            assert protocol in (AudioTokenMergeHooks, ModelHooks, GenerationHooks)
            for name in names:
                assert name in vars(protocol), (protocol.__name__, name)
                assert inspect.getdoc(vars(protocol)[name]), (protocol.__name__, name)
    # and every hook method of the protocol classes is listed
    for protocol in (AudioTokenMergeHooks, ModelHooks, GenerationHooks):
        methods = {
            name for name, value in vars(protocol).items() if inspect.isfunction(value) or isinstance(value, property)
        }
        assert methods <= DECLARED, methods - DECLARED


def test_the_mixins_inherit_the_protocol():
    assert issubclass(AudioTokenMergeModelMixin, ModelHooks)
    assert issubclass(AudioTokenMergeGenerationMixin, GenerationHooks)
    for protocol in (ModelHooks, GenerationHooks):
        assert issubclass(protocol, AudioTokenMergeHooks)


def test_a_required_hook_raises_until_provided():
    with pytest.raises(NotImplementedError):
        ModelHooks._run_encoder(object(), None, None)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_each_backbone_provides_the_required_hooks(cls):
    if not issubclass(cls, AudioTokenMergeModelMixin):
        return
    for name in REQUIRED_HOOKS[ModelHooks]:
        # `_merged_audio_features` is the only caller of `_run_encoder`: a backbone that replaces it needs none
        provided = getattr(cls, name) is not getattr(ModelHooks, name)
        assert provided or cls._merged_audio_features is not ModelHooks._merged_audio_features, name


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_backbones_override_only_declared_hooks(cls):
    """A private method a backbone defines that the shared machinery also defines is a declared hook (or a hook of
    transformers' own, such as `_expand_inputs_for_generation`)."""
    shared = {
        name
        for mixin in MIXINS
        for klass in mixin.__mro__
        if klass.__module__.startswith("hf_ltbm.models")
        for name in vars(klass)
    }
    upstream = set(dir(GenerationMixin)) | set(dir(PreTrainedModel))
    for klass in cls.__mro__:
        if not klass.__module__.startswith("hf_ltbm.backbones"):
            continue
        for name, value in vars(klass).items():
            method = inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod))
            if not method or not name.startswith("_") or name.startswith("__") or name not in shared:
                continue
            assert name in DECLARED or name in upstream, f"{klass.__name__}.{name} overrides an undeclared hook"
