"""Models added while serving: refresh a running server's runtime view, then load through Triton's model control.

`attnserve serve` runs Triton on a *runtime view* (a generated copy of the repository, see `runtime_view`), in
explicit model-control mode with the model-repository API behind the admin token. A model exported after the
start is in the source repository but not in the view, so Triton's own `load` fails ("failed to poll from
model repository"). `refresh_view` rebuilds the named entries in the live view (with the pipeline entries a
`--pipeline` request needs, generated when the source has none), and `load_models` asks Triton to (re)load
them, dependencies first, so a new or re-exported model answers without a restart.

`attnserve serve` leaves a `ServeState` in `REPOSITORY/.attnserve-serve.json` while it runs (no secret in it:
the admin token stays in its mode-0600 file), so `attnserve load NAME` finds the view and the URL by itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from attnserve.errors import ServerError, UnknownModelError, UserInputError

logger = logging.getLogger(__name__)

STATE_FILENAME = ".attnserve-serve.json"
"""Left in the served repository by `attnserve serve` while it runs (removed at stop)."""


class NotExportedError(UnknownModelError):
    """`attnserve load NAME` for a name with no entry in the served repository (not exported there yet)."""

    def __init__(self, name: str, repository: Path, known: Sequence[str]) -> None:
        super().__init__(name, list(known))
        listed = ", ".join(self.known) or "(none)"
        self.args = (
            f"{name!r} is not exported to {repository} (its entries: {listed}); export it first with "
            f"`attnserve export {name} --repository {repository}` (or `attnserve export --hf DIR --hf-name {name}` for "
            f"a Hugging Face folder), then run `attnserve load {name}` again",
        )


@dataclass(frozen=True)
class ServeState:
    """Where a running `attnserve serve` is: its URLs, runtime view, work folder and CPU runtime override."""

    http_url: str
    grpc_url: str
    view: str
    work_dir: str
    repository: str
    pid: int
    runtime: str | None = None

    def write(self) -> Path:
        """Write `REPOSITORY/.attnserve-serve.json`."""
        path = Path(self.repository) / STATE_FILENAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, repository: Path | str) -> ServeState:
        """The state of the server running on `repository`.

        Raises:
            UserInputError: No `attnserve serve` runs on it (no state file, or its process is gone).
        """
        path = Path(repository) / STATE_FILENAME
        if not path.is_file():
            raise UserInputError(
                f"no running `attnserve serve` found for {repository} (expected {path}); start one with "
                f"`attnserve serve --repository {repository}`, or pass --url and --view"
            )
        state = cls(**json.loads(path.read_text()))
        if not _alive(state.pid):
            raise UserInputError(f"the `attnserve serve` recorded in {path} (pid {state.pid}) is not running")
        return state


def remove_state(repository: Path | str, pid: int) -> None:
    """Remove the state file when it is this server's (a second server on the same repository keeps its own)."""
    path = Path(repository) / STATE_FILENAME
    try:
        if path.is_file() and json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        logger.warning("could not remove %s", path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def add_pipeline_entries(repository: Path | str, view: Path | str, names: Sequence[str]) -> list[str]:
    """Write `NAME_preprocess` + `NAME_pipeline` into the view for exported models whose source has none.

    The source repository is not modified; `attnserve pipelines` writes them there for good.

    Returns:
        The entry names written into the view (preprocess before pipeline).
    """
    from attnserve.repository.entries import model_entry_specs
    from attnserve.serving.pipelines import write_pipeline_entries

    specs = model_entry_specs(Path(repository))
    written: list[str] = []
    for name in names:
        spec = specs.get(name)
        if spec is None or (Path(repository) / spec.pipeline_name).is_dir():
            continue
        write_pipeline_entries(spec, view)
        written += [
            spec.preprocess_name,
            *([spec.postprocess_name] if spec.kind == "detection" else []),
            spec.pipeline_name,
        ]
        written += [spec.timeline_name] if spec.kind == "video" else []  # loads after the model it calls
    return written


def require_exported(repository: Path | str, names: Sequence[str], entries: Sequence[str] | None = None) -> None:
    """Check that every name has an entry in the repository before anything is loaded.

    Raises:
        NotExportedError: A name has no entry: the error says which command writes it.
    """
    from attnserve.repository.layout import repository_entries

    known = list(entries) if entries is not None else list(repository_entries(Path(repository)))
    for name in names:
        if name not in known:
            raise NotExportedError(name, Path(repository), known)


def _entries_for(repository: Path, names: Sequence[str]) -> list[str]:
    """`names` and their siblings in the source (`NAME_explain`, `NAME_preprocess`, `NAME_pipeline`)."""
    from attnserve.repository.layout import repository_entries
    from attnserve.spec import explain_name, pipeline_name, postprocess_name, preprocess_name, timeline_name

    entries = repository_entries(repository)
    require_exported(repository, names, list(entries))
    wanted: list[str] = []
    for name in names:
        siblings = (name, explain_name(name), preprocess_name(name), postprocess_name(name), pipeline_name(name),
                    timeline_name(name))  # fmt: skip
        wanted += [entry for entry in siblings if entry in entries and entry not in wanted]
    return wanted


def refresh_view(
    repository: Path | str, view: Path | str, names: Sequence[str], runtime: str | None = None
) -> list[str]:
    """Rebuild the view's entries for `names` (and siblings) from the source; return them in load order.

    Raises:
        UnknownModelError: A name is not in the source repository.
        UserInputError: An entry cannot be served on the CPU (its reason), or the view is not a folder.
    """
    from attnserve.serving.runtime_view import build_runtime_repository

    repository, view = Path(repository), Path(view)
    if not view.is_dir():
        raise UserInputError(f"expected the server's runtime view at {view}; not a folder")
    wanted = _entries_for(repository, names)
    with tempfile.TemporaryDirectory(prefix="attnserve-load-") as scratch:
        fresh, loaded, skipped = build_runtime_repository(repository, scratch, wanted, runtime=runtime)
        refused = {name: reason for name, reason in skipped.items() if name in names}
        if refused:
            raise UserInputError(f"cannot serve on this CPU server: {refused}")
        for name in loaded:
            shutil.rmtree(view / name, ignore_errors=True)
            shutil.copytree(fresh / name, view / name, symlinks=True)
    loaded += add_pipeline_entries(repository, view, [name for name in names if name in loaded])
    # dependencies first: models, then pre-processing, then the ensembles that call them
    return sorted(loaded, key=lambda entry: (entry.endswith("_pipeline"), entry.endswith("_preprocess")))


def load_models(http_url: str, names: Sequence[str], admin_token: str, timeout_s: float = 300.0) -> list[str]:
    """Ask Triton to (re)load each name, in order (HTTP model-control API, admin token); return the READY ones.

    Raises:
        ServerError: Triton refused or failed a load (its message, with the model's name).
    """
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from attnserve.security import ADMIN_TOKEN_HEADER

    client = httpclient.InferenceServerClient(http_url, network_timeout=timeout_s, connection_timeout=timeout_s)
    try:
        for name in names:
            try:
                client.load_model(name, headers={ADMIN_TOKEN_HEADER: admin_token})
            except InferenceServerException as exc:
                raise ServerError(f"Triton at {http_url} could not load {name!r}: {exc.message()}") from exc
        return [name for name in names if client.is_model_ready(name)]
    finally:
        client.close()
