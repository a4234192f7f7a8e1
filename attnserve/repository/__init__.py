"""attnserve.repository: the one owner of the Triton model repository (beside `attnserve.spec`).

Data flows one way: models -> export -> repository -> serving -> clients. The export writes entries through
this package, the serving side reads them through it; neither imports the other.

- `layout`: file names (`config.pbtxt`, `model.onnx`, `labels.txt`, ...), version folders, entry enumeration.
- `config`: typed Triton `ModelConfig` objects, rendered to `config.pbtxt` and read back (`read_config`).
- `runner`: the CPU runner's typed parameters (`RunnerParameters`: runtime, precision, model file, threads).
- `entries`: configs from a ModelSpec, writing entries (`add_model`, `write_model_entry`, ...), reading their
  spec back, and the choice of the file the CPU runner serves (`served_file`).

Entry names (`NAME_explain`, `NAME_trt`, `NAME_pipeline`, `NAME_preprocess`) come from the spec's helpers.
"""
