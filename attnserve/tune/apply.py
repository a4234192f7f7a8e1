"""Write a tuned configuration into the model's repository entry through the export package's generator.

The entry's `config.pbtxt` is rendered again by `attnserve.repository.entries.model_config_for` from the spec
with the tuned knobs (never edited by hand); the entry's other parameters (`runtime`, `precision`,
`model_file` of a CPU variant) are kept, or set to the tuned variant. `spec.json` beside it, and the training
run's `runs/NAME/spec.json` when there is one (so a later `attnserve export` keeps the tuned knobs), record it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from attnserve.errors import UserInputError
from attnserve.repository.layout import ONNX_FILENAME
from attnserve.spec import SPEC_FILENAME, ModelSpec
from attnserve.tune.candidates import Candidate

logger = logging.getLogger(__name__)

_GENERATED_PARAMETERS = {"attnserve_spec", "intra_op_threads", "allow_spinning"}


def _entry_parameters(model_dir: Path) -> dict[str, str]:
    from attnserve.repository.config import read_config

    config = read_config(model_dir)
    return {key: value.string_value for key, value in config.parameters.items() if key not in _GENERATED_PARAMETERS}


def _variant_parameters(
    candidate: Candidate, parameters: dict[str, str]
) -> tuple[dict[str, str], dict[str, Path | None]]:
    """The entry's runner parameters pointed at the candidate's variant, and the variant file the entry needs
    (copied into its latest version folder when absent there)."""
    variant = candidate.variant
    if variant is None:
        return parameters, {}
    parameters = dict(parameters, runtime=variant.runtime, precision=variant.precision)
    if variant.model_file == ONNX_FILENAME:
        parameters.pop("model_file", None)
        return parameters, {}
    parameters["model_file"] = variant.model_file
    return parameters, {variant.model_file: Path(variant.path) if variant.path is not None else None}


def apply_candidate(repository: Path, name: str, candidate: Candidate, runs_dir: Path | None = None) -> list[Path]:
    """Make `repository/NAME` serve `candidate`; returns the files written.

    Raises:
        UserInputError: the entry does not exist or is not an attnserve entry (no spec).
    """
    from attnserve.repository.entries import CONFIG_FILENAME, model_config_for, read_entry_spec, update_entry

    model_dir = Path(repository) / name
    if not (model_dir / CONFIG_FILENAME).is_file():
        raise UserInputError(f"no repository entry {model_dir}: expected {model_dir / CONFIG_FILENAME}")
    spec = candidate.apply_to(read_entry_spec(model_dir))
    parameters, variant_files = _variant_parameters(candidate, _entry_parameters(model_dir))
    config = model_config_for(spec, extra_parameters=parameters)
    written = update_entry(model_dir, config, spec, variant_files)
    run_spec = Path(runs_dir) / name / SPEC_FILENAME if runs_dir is not None else None
    if run_spec is not None and run_spec.is_file():
        written.append(candidate.apply_to(ModelSpec.load(run_spec)).save(run_spec))
    logger.info("applied %s to %s", candidate.name, model_dir)
    return written
