"""ONNX -> TensorRT engine (GPU hosts only), with the optimisation profile taken from the ModelSpec.

The profile is min 1 / opt `spec.serving.opt_batch_size` / max `spec.serving.max_batch_size`: the same value that sets the
ONNX export's batch bound and `max_batch_size` in `config.pbtxt`, so the three cannot disagree (the most
reported Triton + TensorRT failure). Where `import tensorrt` fails or no CUDA GPU exists (always on the CPU
machines of this project: docs/measured.md#tensorrt), `build_engine` returns a `skipped` stage with that reason.

TensorRT API used (TensorRT 10 / 11 Python API, docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/
python-api-docs.html): `Builder`, `create_network`, `OnnxParser.parse_from_file`,
`create_optimization_profile().set_shape`, `IBuilderConfig.set_memory_pool_limit`,
`create_timing_cache` / `set_timing_cache`, `profiling_verbosity = ProfilingVerbosity.DETAILED`,
`build_serialized_network`. Fusion is read from the engine itself with the engine inspector
(`engine.create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)`, see
docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/engine-tools.html): fused attention
appears as layers/tactics named `*mha*` (or Myelin `_gemm_mha_` kernels). TensorRT 11 removed
`BuilderFlag.FP16` (networks are strongly typed): precision comes from the fp16 ONNX (`export/fp16.py`);
TensorRT 10 builds that graph with the `STRONGLY_TYPED` network flag for the same result.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any

from pydantic import model_validator

from attnserve.errors import ParityError
from attnserve.export.reports import ParityReport
from attnserve.export.stages import ArtefactReport, ExportStage, Stage, StageResult, StageRunner
from attnserve.spec import INPUT_NAME, ModelSpec

logger = logging.getLogger(__name__)

WORKSPACE_BYTES = 2 << 30


class TensorRTProfile(ArtefactReport):
    """One optimisation profile for the `pixels` input; shapes include the batch."""

    input_name: str = INPUT_NAME
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]

    @model_validator(mode="after")
    def _ordered(self) -> TensorRTProfile:
        if not (self.min_shape[1:] == self.opt_shape[1:] == self.max_shape[1:]):
            raise ValueError(f"only the batch may vary: {self.min_shape}, {self.opt_shape}, {self.max_shape}")
        if not (1 <= self.min_shape[0] <= self.opt_shape[0] <= self.max_shape[0]):
            raise ValueError(f"profile batches must satisfy 1 <= min <= opt <= max, got {self.batch_range}")
        return self

    @property
    def batch_range(self) -> tuple[int, int, int]:
        return self.min_shape[0], self.opt_shape[0], self.max_shape[0]


def profile_for(spec: ModelSpec) -> TensorRTProfile:
    """min 1 / opt `spec.serving.opt_batch_size` / max `spec.serving.max_batch_size`, per-sample shape `spec.io.input_shape`."""
    sample = tuple(spec.io.input_shape)
    return TensorRTProfile(
        min_shape=(1, *sample),
        opt_shape=(spec.serving.opt_batch_size, *sample),
        max_shape=(spec.serving.max_batch_size, *sample),
    )


def trtexec_command(
    onnx_path: Path,
    plan_path: Path,
    spec: ModelSpec,
    *,
    timing_cache: Path | None = None,
    layers_json: Path | None = None,
) -> str:
    """The equivalent `trtexec` command line (for NVIDIA's container, e.g. the compose build step).

    `--stronglyTyped` takes the precision from the (fp16) ONNX graph, which is TensorRT 11's only mode and
    TensorRT 10's equivalent of it.
    """
    profile = profile_for(spec)

    def shape(dims: tuple[int, ...]) -> str:
        return f"{profile.input_name}:{'x'.join(str(d) for d in dims)}"

    arguments = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={plan_path}",
        f"--minShapes={shape(profile.min_shape)}",
        f"--optShapes={shape(profile.opt_shape)}",
        f"--maxShapes={shape(profile.max_shape)}",
        "--stronglyTyped",
        "--profilingVerbosity=detailed",
        f"--memPoolSize=workspace:{WORKSPACE_BYTES >> 20}M",
    ]
    if timing_cache is not None:
        arguments.append(f"--timingCacheFile={timing_cache}")
    if layers_json is not None:
        arguments.append(f"--exportLayerInfo={layers_json}")
    return shlex.join(arguments)


def tensorrt_unavailable() -> str | None:
    """None when TensorRT imports and a CUDA GPU is visible, else the reason the build cannot run."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install raising at import
        return f"TensorRT is not importable here ({type(exc).__name__}: {exc})"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU visible (torch.cuda.is_available() is False)"
    except Exception as exc:  # noqa: BLE001
        return f"cannot query CUDA ({type(exc).__name__}: {exc})"
    return None


def count_fused_attention_layers(engine_info: dict[str, Any]) -> dict[str, Any]:
    """Fused attention in an engine-inspector JSON: layers whose name, type or tactic mentions MHA.

    Args:
        engine_info: `json.loads(inspector.get_engine_information(LayerInformationFormat.JSON))`; with
            `ProfilingVerbosity.DETAILED` each layer is a dict (`Name`, `LayerType`, `TacticName`, ...),
            otherwise a name string.

    Returns:
        `{"layers": n_layers, "fused_attention_layers": n, "fused_attention_names": [...]}`.
    """
    layers = engine_info.get("Layers", [])
    names: list[str] = []
    for layer in layers:
        if isinstance(layer, dict):
            text = " ".join(str(layer.get(key, "")) for key in ("Name", "LayerType", "TacticName", "Metadata"))
            name = str(layer.get("Name", ""))
        else:
            text = name = str(layer)
        # Reformat/copy layers that feed an MHA kernel carry its name ("... to fused_mha_1") but are data
        # movement, not attention: counting them would overstate the fusion.
        is_reformat = name.startswith("Reformatting CopyNode") or (
            isinstance(layer, dict) and str(layer.get("LayerType", "")).lower() == "reformat"
        )
        if "mha" in text.lower() and not is_reformat:
            names.append(name)
    return {"layers": len(layers), "fused_attention_layers": len(names), "fused_attention_names": names}


class TensorRTBuildReport(ArtefactReport):
    """The TensorRT stage: built (with fusion facts) or skipped/failed with the reason."""

    stage: StageResult
    onnx_path: Path
    plan_path: Path | None = None
    profile: TensorRTProfile
    trtexec: str
    tensorrt_version: str | None = None
    layers_json: Path | None = None
    fused_attention_layers: int | None = None
    layers: int | None = None
    parity: ParityReport | None = None
    """The engine against ONNX Runtime running the source (fp32) graph, at batch 1, opt and max."""


def build_engine(
    onnx_path: Path,
    spec: ModelSpec,
    plan_path: Path,
    *,
    timing_cache: Path | None = None,
    reference_onnx: Path | None = None,
) -> TensorRTBuildReport:
    """Build a TensorRT engine from an (fp16) ONNX graph, or skip with the reason when it cannot run here.

    Args:
        onnx_path: the graph to build (precision already in the graph: fp16 ONNX from `export/fp16.py`).
        spec: gives the optimisation profile (min 1 / opt / max = `spec.serving.max_batch_size`).
        plan_path: where to write the serialized engine.
        timing_cache: timing-cache file read before and written after the build (default beside the plan).
        reference_onnx: the fp32 graph the engine is checked against in ONNX Runtime (default `onnx_path`);
            tolerance `spec.export.fp16_atol`. A mismatch fails the stage (TensorRT has shipped wrong fused-attention
            results for exported SDPA: TensorRT issues #4333, #4837).

    Returns:
        The report; `report.stage.status` is `ok`, `skipped` (no TensorRT / GPU) or `failed`.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    timing_cache = Path(timing_cache or plan_path.with_suffix(".timing_cache"))
    layers_json = plan_path.with_suffix(".layers.json")
    profile = profile_for(spec)
    command = trtexec_command(onnx_path, plan_path, spec, timing_cache=timing_cache, layers_json=layers_json)
    runner = StageRunner()

    def build() -> tuple[dict[str, Any], ParityReport]:
        facts = _build(onnx_path, profile, plan_path, timing_cache, layers_json)
        parity = engine_parity(plan_path, Path(reference_onnx or onnx_path), spec)
        if not parity.ok:
            raise ParityError("engine differs from ONNX Runtime: " + "; ".join(parity.failures))
        return facts, parity

    stage = Stage(
        ExportStage.ONNX2TRT,
        build,
        skip=tensorrt_unavailable(),
        summary=lambda built: f"fused attention layers {built[0]['fused_attention_layers']}/{built[0]['layers']}",
    )
    built = runner.run(stage)
    report = TensorRTBuildReport(stage=runner.last, onnx_path=onnx_path, profile=profile, trtexec=command)
    if built is None:
        return report
    facts, parity = built
    return report.model_copy(
        update={
            "plan_path": plan_path,
            "tensorrt_version": facts["tensorrt_version"],
            "layers_json": layers_json,
            "fused_attention_layers": facts["fused_attention_layers"],
            "layers": facts["layers"],
            "parity": parity,
        }
    )


def engine_parity(plan_path: Path, reference_onnx: Path, spec: ModelSpec) -> ParityReport:
    """Run the engine (TensorRT 10+ name-based I/O, `execute_async_v3`, torch CUDA buffers) against ORT.

    Returns:
        A `ParityReport` at batch 1, `spec.serving.opt_batch_size` and `spec.serving.max_batch_size`, tolerance `spec.export.fp16_atol`.
    """
    import numpy as np
    import tensorrt as trt
    import torch

    from attnserve.export.torch2onnx import example_pixels
    from attnserve.export.verify import compare_outputs, ort_session

    started = time.perf_counter()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(trt_logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    session = ort_session(reference_onnx)
    batch_sizes = sorted({1, spec.serving.opt_batch_size, spec.serving.max_batch_size})
    results = []
    stream = torch.cuda.Stream()
    for batch_size in batch_sizes:
        pixels = example_pixels(spec, batch_size, seed=batch_size)
        device_input = pixels.cuda().contiguous()
        context.set_input_shape(INPUT_NAME, tuple(device_input.shape))
        context.set_tensor_address(INPUT_NAME, device_input.data_ptr())
        device_outputs = {}
        for name in output_names:
            numpy_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            torch_dtype = torch.from_numpy(np.empty(0, dtype=numpy_dtype)).dtype
            device_outputs[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch_dtype, device="cuda")
            context.set_tensor_address(name, device_outputs[name].data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execute_async_v3 failed at batch {batch_size}")
        stream.synchronize()
        actual = [device_outputs[n].float().cpu().numpy() for n in output_names]
        expected = session.run(output_names, {INPUT_NAME: pixels.numpy()})
        results.extend(
            compare_outputs(
                output_names, actual, expected, batch_size=batch_size, atol=spec.export.fp16_atol, rtol=spec.export.rtol
            )
        )
    failures = [f"output {p.output!r} at batch {p.batch_size}: {p.reason}" for p in results if not p.ok]
    return ParityReport(
        onnx_path=Path(plan_path),
        checker=StageResult(stage="trt.deserialize", status="ok"),
        symbolic_batch=True,
        batch_dim="batch",
        batch_sizes=batch_sizes,
        outputs=results,
        failures=failures,
        seconds=time.perf_counter() - started,
    )


def _build(
    onnx_path: Path, profile: TensorRTProfile, plan_path: Path, timing_cache: Path, layers_json: Path
) -> dict[str, Any]:
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    major = int(trt.__version__.split(".")[0])
    # TensorRT 11: every network is strongly typed (flag 0). TensorRT 10: ask for it, so the fp16 ONNX
    # decides the precision exactly as in 11 (no BuilderFlag.FP16 needed or wanted).
    flags = 0 if major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {'; '.join(errors)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then names tactics
    optimisation_profile = builder.create_optimization_profile()
    optimisation_profile.set_shape(profile.input_name, profile.min_shape, profile.opt_shape, profile.max_shape)
    config.add_optimization_profile(optimisation_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT's builder returned no engine (see the TensorRT log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))

    engine = trt.Runtime(trt_logger).deserialize_cuda_engine(bytes(serialized))
    inspector = engine.create_engine_inspector()
    engine_info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    layers_json.write_text(json.dumps(engine_info, indent=2))
    fusion = count_fused_attention_layers(engine_info)
    return {"tensorrt_version": trt.__version__, **fusion}
