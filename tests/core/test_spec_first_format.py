"""Specs of the first, flat format (tests/data/spec_v1, written by the code before the spec had sections) still
load, and export the same Triton configs; served configs of that format still tell a client what it needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from attnserve.catalogue import DEPLOYABLE_NAMES, default_spec
from attnserve.clients.model_info import ModelInfo
from attnserve.preprocessing import Preprocessing
from attnserve.repository.config import ModelConfig, spec_json_from_pbtxt
from attnserve.repository.entries import explain_config_for, model_config_for, trt_config_for
from attnserve.spec import SECTIONS, SPEC_PARAMETER, ModelSpec

FIRST_FORMAT = Path(__file__).parents[1] / "data" / "spec_v1"
SPEC_FILES = sorted(FIRST_FORMAT.glob("*.spec.json"))
STEMS = [path.name.removesuffix(".spec.json") for path in SPEC_FILES]


def _first_format(stem: str) -> dict:
    return json.loads((FIRST_FORMAT / f"{stem}.spec.json").read_text())


def _assert_same_config(rendered: ModelConfig, golden_file: str) -> None:
    """Field by field; the spec parameter compared as specs (its JSON is now written in sections)."""
    golden = ModelConfig.from_pbtxt((FIRST_FORMAT / golden_file).read_text())
    assert rendered.model_dump(exclude={"parameters"}) == golden.model_dump(exclude={"parameters"})
    ours, theirs = dict(rendered.parameters), dict(golden.parameters)
    ours_spec, golden_spec = ours.pop(SPEC_PARAMETER), theirs.pop(SPEC_PARAMETER)
    assert ours == theirs
    assert ModelSpec.model_validate_json(ours_spec.string_value) == ModelSpec.model_validate_json(
        golden_spec.string_value
    )


def test_the_golden_files_are_of_the_first_format() -> None:
    assert len(SPEC_FILES) >= 10 and {"trained_vit_digits", "tuned_cnn_cbam_digits", "hf_vit"} <= set(STEMS)
    assert set(DEPLOYABLE_NAMES) <= set(STEMS)
    for stem in STEMS:
        assert not set(_first_format(stem)) & set(SECTIONS), stem


@pytest.mark.parametrize("stem", STEMS)
def test_a_first_format_spec_loads_into_its_sections_and_renders_the_same_config(stem: str, tmp_path: Path) -> None:
    flat = _first_format(stem)
    spec = ModelSpec.load(FIRST_FORMAT / f"{stem}.spec.json")
    for key, value in flat.items():
        section = next((name for name, model in SECTIONS.items() if key in model.model_fields), None)
        read = getattr(spec if section is None else getattr(spec, section), key)
        assert json.loads(json.dumps(read, default=vars)) == value, key
    _assert_same_config(model_config_for(spec), f"{stem}.config.pbtxt")
    saved = spec.save(tmp_path / "spec.json")
    assert ModelSpec.load(saved) == spec
    assert ModelSpec.load(spec.save(tmp_path / "again.json")).model_dump_json() == spec.model_dump_json()


def test_the_explain_and_tensorrt_configs_are_the_same() -> None:
    _assert_same_config(explain_config_for(ModelSpec.load(FIRST_FORMAT / "vit_digits.spec.json"), (4, 4)),
                        "vit_digits_explain.config.pbtxt")  # fmt: skip
    _assert_same_config(explain_config_for(ModelSpec.load(FIRST_FORMAT / "hf_vit.spec.json"), (4, 4)),
                        "hf_vit_explain.config.pbtxt")  # fmt: skip
    _assert_same_config(trt_config_for(ModelSpec.load(FIRST_FORMAT / "vit_tiny_patch16_224.spec.json")),
                        "vit_tiny_patch16_224_trt.config.pbtxt")  # fmt: skip


@pytest.mark.parametrize("name", DEPLOYABLE_NAMES)
def test_the_catalogue_serves_each_deployable_as_before(name: str) -> None:
    """Sections that state only what differs from the defaults give the specs the flat recipes gave."""
    before = ModelSpec.load(FIRST_FORMAT / f"{name}.spec.json")
    now = default_spec(name)
    assert now.replace(arch_args=before.arch_args) == before
    assert now.arch_args.items() <= before.arch_args.items()  # only repeats of the architecture's defaults went


def test_a_served_config_of_the_first_format_tells_a_client_its_labels_and_preprocessing() -> None:
    text = (FIRST_FORMAT / "hf_vit.config.pbtxt").read_text()
    spec_dict = spec_json_from_pbtxt(text)
    assert spec_dict is not None and "labels" in spec_dict  # flat, as the server holds it
    spec = ModelSpec.model_validate(spec_dict)
    assert spec.io.labels == ("cat", "dog", "fox")
    config = ModelConfig.from_pbtxt(text)
    served = {"parameters": {key: {"string_value": value.string_value} for key, value in config.parameters.items()}}
    info = ModelInfo.from_server({"name": "hf_vit", "inputs": [], "outputs": []}, served)
    assert info.spec_io["labels"] == ["cat", "dog", "fox"] and info.spec["io"]["labels"] == ["cat", "dog", "fox"]
    assert info.trained is spec.trained is True  # save_pretrained weights
    assert ModelSpec.model_validate(info.spec) == spec
    # a flat spec declaring a preprocessing other than the default reaches the client as declared
    letterbox = {**spec_dict, "preprocessing": {**spec_dict["preprocessing"], "resize": "letterbox"}}
    served["parameters"][SPEC_PARAMETER] = {"string_value": json.dumps(letterbox)}
    info = ModelInfo.from_server({"name": "hf_vit", "inputs": [], "outputs": []}, served)
    assert info.preprocessing == Preprocessing.from_mapping(letterbox["preprocessing"]) != Preprocessing()
    assert info.preprocessing.resize == "letterbox"


def test_a_spec_mixing_both_formats_or_with_unknown_keys_is_refused_naming_them() -> None:
    flat = _first_format("vit_digits")
    sections = default_spec("vit_digits").model_dump(mode="json")
    with pytest.raises(ValidationError, match=r"together with flat keys \(max_batch_size -> serving.max_batch_size"):
        ModelSpec.model_validate({**sections, "max_batch_size": 4})
    with pytest.raises(ValidationError, match=r"unknown keys \['max_batch'\] in a flat"):
        ModelSpec.model_validate({**flat, "max_batch": 4})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ModelSpec.model_validate({**sections, "max_batch": 4})
