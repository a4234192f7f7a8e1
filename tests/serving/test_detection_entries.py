"""A detector's repository entries, without a server: the three-step pipeline, its typed configs read back, and
the post-processing step on exact candidates (letterbox: boxes back in the original's pixels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from attnserve.catalogue import default_spec
from attnserve.preprocessing import Preprocessing
from attnserve.repository.config import read_config
from attnserve.serving.pipelines import write_pipeline_entries
from attnserve.serving.python_models.postprocess import DetectionTarget, detections_json
from attnserve.spec import DETECTION_OUTPUTS, DETECTIONS_OUTPUT, ORIGINAL_SIZE


def test_the_pipeline_is_preprocess_model_postprocess(tmp_path: Path) -> None:
    spec = default_spec("det_shapes")
    write_pipeline_entries(spec, tmp_path)
    pipeline = read_config(tmp_path / spec.pipeline_name)
    steps = pipeline.ensemble_scheduling.step  # type: ignore[union-attr]
    assert [step.model_name for step in steps] == [spec.preprocess_name, spec.name, spec.postprocess_name]
    assert steps[0].output_map == {"pixels": "pixels", ORIGINAL_SIZE: ORIGINAL_SIZE}
    assert set(steps[2].input_map) == {*DETECTION_OUTPUTS, ORIGINAL_SIZE}
    assert [o.name for o in pipeline.output] == [DETECTIONS_OUTPUT] and pipeline.input[0].name == "image"
    postprocess = read_config(tmp_path / spec.postprocess_name)
    assert [tuple(i.dims) for i in postprocess.input] == [(32, 4), (32,), (32,), (2,)]
    target = DetectionTarget.from_parameters({k: v.string_value for k, v in postprocess.parameters.items()})
    assert target.labels == spec.io.labels and (target.width, target.height) == (96, 64)
    assert [o.name for o in read_config(tmp_path / spec.preprocess_name).output] == ["pixels", ORIGINAL_SIZE]


def test_postprocessing_maps_letterboxed_candidates_to_the_original() -> None:
    """A 400x100 original letterboxed into 96x64: scale 0.24, image 96x24 pasted at y = 20."""
    target = DetectionTarget(labels=("a", "b"), width=96, height=64, preprocessing=Preprocessing(resize="letterbox"))
    boxes = np.array([[24.0, 26.0, 48.0, 38.0], [0.0, 0.0, 96.0, 64.0], [1, 1, 2, 2]], dtype=np.float32)
    scores, classes = np.array([0.9, 0.6, 0.1], dtype=np.float32), np.array([1, 0, 0])
    found = json.loads(detections_json(boxes, scores, classes, np.array([400, 100], dtype=np.int32), target))
    assert [d["label"] for d in found] == ["b", "a"]  # the 0.1 candidate is under the threshold
    np.testing.assert_allclose(found[0]["box"], [100.0, 25.0, 200.0, 75.0], atol=1e-4)
    np.testing.assert_allclose(found[1]["box"], [0.0, 0.0, 400.0, 100.0])  # the padding clips to the image
    empty = detections_json(boxes, scores * 0, classes, np.array([400, 100], dtype=np.int32), target)
    assert json.loads(empty) == []
