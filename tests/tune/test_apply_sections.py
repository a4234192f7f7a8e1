"""`attnserve tune` changes only the `serving` and `runtime` sections of a spec (no server: the writer alone)."""

from __future__ import annotations

from pathlib import Path

from support.synthetic import light_spec, linear_onnx

from attnserve.repository.entries import read_entry_spec, write_model_entry
from attnserve.spec import ModelSpec
from attnserve.tune.apply import apply_candidate
from attnserve.tune.candidates import Candidate, Variant

TUNED = Candidate(
    dynamic_batching=True,
    max_queue_delay_us=300,
    preferred_batch_sizes=(2,),
    max_batch_size=4,
    instance_count=2,
    intra_op_threads=1,
    allow_spinning=False,
    variant=Variant(name="onnxruntime_fp32", runtime="onnxruntime", precision="fp16", model_file="model.onnx"),
)


def _outside_serving_and_runtime(spec: ModelSpec) -> dict:
    return spec.model_dump(exclude={"serving", "runtime"})


def test_a_tuned_spec_differs_from_its_input_only_in_serving_and_runtime(tmp_path: Path) -> None:
    spec = light_spec("tuned_light").with_export(atol=2e-4).with_runtime(cosine_budget=0.99)
    repository, runs = tmp_path / "repository", tmp_path / "runs"
    write_model_entry(spec, linear_onnx(tmp_path / "light.onnx", spec.io.input_shape, spec.num_classes), repository)
    spec.save(runs / spec.name)

    apply_candidate(repository, spec.name, TUNED, runs_dir=runs)

    for tuned in (read_entry_spec(repository / spec.name), ModelSpec.load(runs / spec.name)):
        assert _outside_serving_and_runtime(tuned) == _outside_serving_and_runtime(spec)
        assert (tuned.serving.max_batch_size, tuned.serving.preferred_batch_sizes) == (4, (2,))
        assert (tuned.serving.max_queue_delay_us, tuned.serving.instance_count) == (300, 2)
        assert tuned.serving.max_queue_size == spec.serving.max_queue_size  # not a knob tune searches: kept
        assert (tuned.runtime.intra_op_threads, tuned.runtime.allow_spinning) == (1, False)
        assert (tuned.runtime.cpu_runtime, tuned.runtime.cpu_precision) == ("onnxruntime", "fp16")
        assert tuned.runtime.cosine_budget == 0.99
        assert Candidate.from_spec(tuned).model_dump(exclude={"variant"}) == TUNED.model_dump(exclude={"variant"})
