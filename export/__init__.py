"""attnserve.export: PyTorch -> verified ONNX -> ORT-optimised / fp16 / TensorRT, and Triton repository entries.

Never starts a server. Modules (stages by file, converters named after what they convert):

- `torch2onnx.export_onnx(model, spec, onnx_path)`: dynamo exporter, symbolic batch, TorchScript fallback.
- `verify.verify_onnx(onnx_path, model, spec)`: checker, symbolic batch, non-vacuous ORT vs torch parity.
- `ort_optimize.optimize_for_cpu`: ORT offline graph optimisation, kept only with parity and a gain.
- `fp16.export_fp16`: fp16 ONNX for TensorRT (ModelOpt autocast), verified against fp32 in ORT.
- `onnx2trt.build_engine`: TensorRT engine from the spec's profile (skipped with the reason without a GPU).
- repository entries are written through `attnserve.repository` (typed configs, layout, runner parameters).
- `hf_import.load_hf_classifier`: a local Hugging Face image classifier, offline, uint8 in; `hf_detection`: the
  Hugging Face detectors (DETR, YOLOS) as fixed-size candidates.
- `pipeline.export_model` / `export_module` / `export_hf`: all stages for one deployable; `cli`: `attnserve export`.
- `stages`: the stage engine and its typed results (`StageResult`, `ArtefactReport`); `reports`: the ONNX and parity
  reports; `onnx_graph`: reading exported graphs (attention nodes, shapes).
- `cpu_variants` (the variant files), `cpu_choice` (measure them, pick one behind the accuracy gate) and
  `cpu_choice_cli` (`attnserve cpu-variants`, alias `optimize`): the CPU fast path.
"""
