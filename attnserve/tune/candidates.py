"""Candidate serving configurations: the knobs `attnserve tune` searches, and the grid they span.

Knobs: dynamic batching on/off, `max_queue_delay_us` (0 included), preferred batch sizes, `max_batch_size`,
`instance_count` with the CPU runtime's intra-op threads per instance and whether its idle threads spin, and
the CPU variant (runtime x precision, among those that passed `attnserve cpu-variants`'s accuracy gate).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt, model_validator

from attnserve.errors import UserInputError
from attnserve.spec import ModelSpec

SERVING_KNOBS = ("dynamic_batching", "max_queue_delay_us", "preferred_batch_sizes", "max_batch_size", "instance_count")
"""Candidate fields that are fields of the same name in the spec's `serving` section."""
RUNTIME_KNOBS = ("intra_op_threads", "allow_spinning")
"""Candidate fields that are fields of the same name in the spec's `runtime` section (the variant sets two more)."""
SPEC_KNOBS = SERVING_KNOBS + RUNTIME_KNOBS


class Variant(BaseModel):
    """A CPU variant that passed the accuracy gate: runtime, precision and the file it serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    runtime: str
    precision: str
    model_file: str
    """File name inside the variants folder / the entry's version folder."""
    path: str | None = None
    """Absolute path of the file (None: the entry's own file)."""


class Candidate(BaseModel):
    """One serving configuration to measure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dynamic_batching: bool = True
    max_queue_delay_us: NonNegativeInt = 0
    preferred_batch_sizes: tuple[PositiveInt, ...] = ()
    max_batch_size: PositiveInt = 16
    instance_count: PositiveInt = 1
    intra_op_threads: NonNegativeInt = 0
    """0 = cores // instance_count."""
    allow_spinning: bool = True
    variant: Variant | None = None
    """None = the variant the entry serves today."""

    @model_validator(mode="after")
    def _check(self) -> Candidate:
        too_big = [b for b in self.preferred_batch_sizes if b > self.max_batch_size]
        if too_big:
            raise ValueError(f"preferred batch sizes {too_big} exceed max_batch_size {self.max_batch_size}")
        return self

    @property
    def name(self) -> str:
        """A short readable label, e.g. `dyn d=0us pref=- max=16 | 2x1t nospin | onnxruntime_fp32`."""
        if self.dynamic_batching:
            preferred = "/".join(map(str, self.preferred_batch_sizes)) or "-"
            batching = f"dyn d={self.max_queue_delay_us}us pref={preferred} max={self.max_batch_size}"
        else:
            batching = f"batching off max={self.max_batch_size}"
        threads = f"{self.intra_op_threads}t" if self.intra_op_threads else "auto-t"
        spin = "spin" if self.allow_spinning else "nospin"
        variant = f" | {self.variant.name}" if self.variant is not None else ""
        return f"{batching} | {self.instance_count}x{threads} {spin}{variant}"

    def normalized(self) -> Candidate:
        """One canonical form per served configuration, so the grid has no twins and what is applied is what
        Triton reports: batching off ignores delay and preferred sizes; batching on without preferred sizes is
        served as preferring `max_batch_size` (Triton fills that in when the config names none)."""
        if not self.dynamic_batching:
            return self.model_copy(update={"max_queue_delay_us": 0, "preferred_batch_sizes": ()})
        if not self.preferred_batch_sizes:
            return self.model_copy(update={"preferred_batch_sizes": (self.max_batch_size,)})
        return self

    def apply_to(self, spec: ModelSpec) -> ModelSpec:
        """`spec` with this candidate's knobs (and variant's runtime/precision): only its `serving` and `runtime`
        sections change, validated again."""
        runtime = {knob: getattr(self, knob) for knob in RUNTIME_KNOBS}
        if self.variant is not None:
            runtime.update(cpu_runtime=self.variant.runtime, cpu_precision=self.variant.precision)
        serving = spec.serving.replace(**{knob: getattr(self, knob) for knob in SERVING_KNOBS})
        return spec.replace(serving=serving, runtime=spec.runtime.replace(**runtime))

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Candidate:
        """The configuration `spec` serves today."""
        knobs = {knob: getattr(spec.serving, knob) for knob in SERVING_KNOBS}
        knobs.update({knob: getattr(spec.runtime, knob) for knob in RUNTIME_KNOBS})
        return cls(**knobs).normalized()


def gated_variants(variants_dir: Path) -> list[Variant]:
    """Variants of `attnserve cpu-variants`'s table (`variants_dir/cpu_variants.json`) that passed its gate.

    Returns an empty list when the table does not exist (the model was not optimised).
    """
    table = Path(variants_dir) / "cpu_variants.json"
    if not table.is_file():
        return []
    rows = json.loads(table.read_text()).get("rows", [])
    return [
        Variant(
            name=row["variant"],
            runtime=row["runtime"],
            precision=row["precision"],
            model_file=row["model_file"],
            path=str((Path(variants_dir) / row["model_file"]).resolve()),
        )
        for row in rows
        if row.get("status") == "ok" and row.get("within_gate")
    ]


def thread_layouts(cores: int) -> list[tuple[int, int]]:
    """(instances, threads per instance) pairs that use the cores at most once: 1xN, Nx1 and 1x1."""
    layouts = [(1, cores), (cores, 1), (1, 1)]
    if cores >= 4:
        layouts.append((2, cores // 2))
    return list(dict.fromkeys(layouts))


class Grid(BaseModel):
    """The values each knob may take (the exhaustive search measures their product)."""

    model_config = ConfigDict(frozen=True)

    dynamic_batching: tuple[bool, ...] = (True, False)
    max_queue_delay_us: tuple[NonNegativeInt, ...] = (0, 100, 500, 2_000)
    preferred_batch_sizes: tuple[tuple[PositiveInt, ...], ...] = ((), (4, 8, 16))
    max_batch_size: tuple[PositiveInt, ...] = (16,)
    layouts: tuple[tuple[PositiveInt, NonNegativeInt], ...] = ((1, 2), (2, 1), (1, 1))
    """(instance_count, intra_op_threads) pairs."""
    allow_spinning: tuple[bool, ...] = (True, False)
    variants: tuple[Variant | None, ...] = (None,)

    def dimensions(self) -> dict[str, Sequence[object]]:
        """Knob name -> its values, in the order hill climbing visits them."""
        # instances x threads first: on a few shared cores it moves throughput the most
        return {
            "layout": self.layouts,
            "dynamic_batching": self.dynamic_batching,
            "max_queue_delay_us": self.max_queue_delay_us,
            "allow_spinning": self.allow_spinning,
            "preferred_batch_sizes": self.preferred_batch_sizes,
            "max_batch_size": self.max_batch_size,
            "variant": self.variants,
        }

    def candidates(self) -> list[Candidate]:
        """Every valid combination, without twins (batching off ignores delay and preferred sizes)."""
        found: dict[Candidate, None] = {}
        names = list(self.dimensions())
        for values in itertools.product(*self.dimensions().values()):
            candidate = build(dict(zip(names, values)))
            if candidate is not None:
                found[candidate] = None
        return list(found)


def build(knobs: dict[str, object]) -> Candidate | None:
    """A candidate from grid-dimension values (`layout` = (instances, threads)); None when invalid."""
    values: dict[str, Any] = dict(knobs)
    layout: tuple[int, int] = values.pop("layout")
    values.update(instance_count=layout[0], intra_op_threads=layout[1])
    # preferred sizes above the max are dropped, not an error
    values["preferred_batch_sizes"] = tuple(b for b in values["preferred_batch_sizes"] if b <= values["max_batch_size"])
    try:
        return Candidate.model_validate(values).normalized()
    except ValueError:
        return None


def parse_preferred(text: str) -> tuple[tuple[int, ...], ...]:
    """`"4/8/16,none"` -> ((4, 8, 16), ()): preferred batch size sets, `none` for no preference.

    Raises:
        UserInputError: a set is not `A/B/...` of positive integers or `none`.
    """
    sets = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        sizes = () if item == "none" else tuple(item.split("/"))
        if not all(size.isdigit() and int(size) > 0 for size in sizes):
            raise UserInputError(f"expected preferred batch sets such as 4/8/16,none; got {item!r}")
        sets.append(tuple(int(size) for size in sizes))
    return tuple(sets)


def parse_layouts(text: str) -> tuple[tuple[int, int], ...]:
    """`"1x2,2x1"` -> ((1, 2), (2, 1)); threads 0 = cores // instances.

    Raises:
        UserInputError: a pair is not `INSTANCESxTHREADS`.
    """
    layouts = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        instances, _, threads = item.partition("x")
        if not (instances.isdigit() and threads.isdigit() and int(instances) >= 1):
            raise UserInputError(f"expected INSTANCESxTHREADS pairs such as 1x2,2x1; got {item!r}")
        layouts.append((int(instances), int(threads)))
    if not layouts:
        raise UserInputError("expected at least one INSTANCESxTHREADS pair")
    return tuple(layouts)
