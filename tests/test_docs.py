"""The documentation stays true to the code: docs/api.md is regenerated and compared, every public object has a
docstring, the hand-written tables cover every option and method, and the CONTRIBUTING example runs."""

import dataclasses
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

import hf_ltbm
from hf_ltbm.merging import available_methods, get_method_class
from hf_ltbm.merging.base import _REGISTRY

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
STALE = "docs/api.md is stale: run `python docs/gen_api.py` and commit the result."


@pytest.fixture(scope="module")
def gen_api():
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api_md():
    return (DOCS / "api.md").read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The body of a `## heading` section of a Markdown file."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


@pytest.mark.skipif(
    hf_ltbm.Qwen2_5OmniThinkerLTBMModel is None,
    reason="the reference is generated where every class exists (Qwen2.5-Omni's thinker model: transformers 5.20+)",
)
def test_api_reference_is_up_to_date(gen_api, api_md):
    _, generated = gen_api.split_api_md(api_md)
    assert generated == gen_api.render().lstrip("\n"), STALE


def test_every_object_in_all_has_a_docstring(gen_api):
    missing = []
    for name in hf_ltbm.__all__:
        obj = getattr(hf_ltbm, name)
        if obj is None:  # a class this transformers release cannot have (Qwen2.5-Omni's thinker model on 5.19)
            continue
        if inspect.isclass(obj):
            doc = vars(obj).get("__doc__")  # its own, not one inherited from transformers
        elif inspect.isroutine(obj):
            doc = obj.__doc__
        else:  # a constant: a `#:` comment above it or a string literal below it where it is defined
            found = gen_api.find_constant("hf_ltbm", name)
            doc = found[2] if found else None
        if not (doc and doc.strip()):
            missing.append(name)
    assert not missing, f"public objects without a docstring: {missing}"


def test_public_members_of_exported_classes_have_docstrings(gen_api):
    missing = [
        f"{name}.{member}"
        for name in hf_ltbm.__all__
        if inspect.isclass(cls := getattr(hf_ltbm, name))
        for member, _obj, doc in gen_api.class_members(cls)
        if not doc.strip()
    ]
    assert not missing, f"public methods without a docstring: {missing}"


def test_configuration_table_lists_every_field(api_md):
    table = _section(api_md, "Configuration options")
    fields = [f.name for f in dataclasses.fields(hf_ltbm.AudioTokenMergeConfig)]
    assert [f for f in fields if f"| `{f}` |" not in table] == []


def test_methods_table_lists_every_builtin_method_and_option(api_md):
    table = _section(api_md, "Methods")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", table, flags=re.M)}
    builtin = [m for m in available_methods() if get_method_class(m).__module__.startswith("hf_ltbm.merging")]
    assert set(builtin) <= set(rows), f"methods missing from the table: {sorted(set(builtin) - set(rows))}"
    for method in builtin:
        cls = get_method_class(method)
        assert cls.__name__ in rows[method], method
        for field in dataclasses.fields(cls):
            assert f"`{field.name}`" in rows[method], f"option {field.name!r} of {method!r} missing from the table"


def test_supported_models_table_lists_every_model_class(api_md):
    table = _section(api_md, "Supported models")
    for name in hf_ltbm.__all__:
        if name.endswith(("LTBMModel", "LTBMForConditionalGeneration", "LTBMProcessor")):
            assert f"`{name}`" in table, name


def test_local_links_in_the_docs_resolve():
    for path in [DOCS / "method.md", DOCS / "api.md", ROOT / "CONTRIBUTING.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")) or target == "docs/reproduce.md":
                continue  # external, or written alongside the evaluation harness
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_contributing_method_example_runs():
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", _section(text, "Adding a method"), flags=re.S)
    assert len(blocks) >= 2
    namespace = {"__name__": "contributing_example"}
    try:
        for block in blocks:
            exec(compile(block, "CONTRIBUTING.md", "exec"), namespace)
        out = namespace["out"]
        assert out.lengths.tolist() == [3, 3] and bool((out.sizes[:, :3] == 1).all())
        assert out.assignment.tolist() == [
            [0, -1, -1, 1, -1, -1, 2, -1, -1, -1],
            [0, -1, 1, -1, 2, -1, -1, -1, -1, -1],
        ]
        assert hf_ltbm.AudioTokenMergeConfig(method="stride", keep_ratio=0.5).output_length(10) == 5
    finally:
        _REGISTRY.pop("stride", None)
