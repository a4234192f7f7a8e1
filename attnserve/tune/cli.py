"""`attnserve tune NAME`: choose a model's serving configuration by measurement under a p99 latency SLO."""

from __future__ import annotations

import argparse
from pathlib import Path

from attnserve.defaults import REPORTS_DIR, REPOSITORY_DIR, RUNS_DIR
from attnserve.errors import UserInputError

HELP = """Search serving configurations of a model on a real Triton and apply the best one.

Knobs: dynamic batching on/off, max_queue_delay_us (0 included), preferred batch sizes, max_batch_size,
instance_count x intra-op threads per instance, whether idle runtime threads spin, and the CPU variant among
those that passed `attnserve cpu-variants`'s accuracy gate. Each candidate is loaded through model control and
measured with the project's load tester. The winner is the candidate whose p99 meets the SLO at every
traffic level with the highest throughput (geometric mean over the levels); it is written into the model's
repository entry (config.pbtxt and spec.json, through the generator), so `attnserve serve` serves it. When
no candidate meets the SLO, nothing is applied and the closest candidate is named; when the winner is what the
entry serves already, nothing is written and the run says "unchanged". Reports: JSON, CSV and a PNG (throughput
vs p99, Pareto front, SLO line) in --out.

Words of the output: the score of a candidate is its throughput (req/s) averaged over the traffic levels with a
geometric mean; [m/n] #i is measurement m of the n planned so far (n moves as the search goes), of candidate
number i; in the confirmation round (the leaders measured again), after the search the 3 leading candidates are measured again,
because one measurement's p99 varies from run to run on shared cores; each leader is then ranked on the mean
throughput and the worst p99 of its measurements (xN in the table: measured N times)."""


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {text!r}") from exc
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from exc
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    tune = subparsers.add_parser(
        "tune",
        help="choose a model's batching/instances/threads/variant by measurement under a p99 SLO, and apply it",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument("name", metavar="NAME", help="the model's repository entry (e.g. vit_digits)")
    tune.add_argument("--slo-p99-ms", type=float, required=True, help="latency SLO: p99 in ms at every level")
    traffic = tune.add_mutually_exclusive_group()
    traffic.add_argument("--concurrency", type=_floats, default=None, help="closed-loop levels (default 1,4,16)")
    traffic.add_argument("--rate", type=_floats, default=None, help="open-loop request rates per second instead")
    tune.add_argument("--budget-minutes", type=float, default=5.0, help="quick mode's time budget (default 5)")
    tune.add_argument(
        "--exhaustive", action="store_true", help="measure the whole grid (default: quick mode, hill climbing)"
    )
    tune.add_argument("--repository", type=Path, default=REPOSITORY_DIR, help="model repository")
    tune.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="training runs (spec, CPU variants)")
    tune.add_argument("--url", default=None, help="HTTP host:port of a running Triton (default: embedded server)")
    tune.add_argument("--grpc-url", default=None, help="with --url: load-test over this gRPC host:port instead")
    tune.add_argument("--admin-token", default=None, help="with --url: admin token (default $ATTNSERVE_ADMIN_TOKEN)")
    tune.add_argument(
        "--delays-us", type=_ints, default=None, help="max_queue_delay_us values (default 0,100,500,2000)"
    )
    tune.add_argument(
        "--max-batch-sizes", type=_ints, default=None, help="max_batch_size values (default: spec's, half)"
    )
    tune.add_argument("--layouts", default=None, help="INSTANCESxTHREADS pairs, e.g. 1x2,2x1,1x1 (default from cores)")
    tune.add_argument(
        "--preferred", default=None, help="preferred batch sets, e.g. 4/8/16,none (default: spec's, none)"
    )
    tune.add_argument(
        "--spinning",
        default=None,
        choices=("on", "off", "on,off"),
        metavar="on|off|on,off",
        help="whether idle runtime threads spin: one value, or both to search (default on,off)",
    )
    tune.add_argument("--no-variants", action="store_true", help="keep the entry's CPU variant (do not search it)")
    tune.add_argument("--window-s", type=float, default=1.0, help="load tester window per measurement (default 1)")
    tune.add_argument(
        "--verify", action="store_true", help="measure the applied winner again on a freshly started server"
    )
    tune.add_argument(
        "--no-confirm",
        action="store_true",
        help="skip the confirmation round (by default the 3 leading candidates are measured again and ranked on "
        "the mean throughput and the worst p99 of their measurements)",
    )
    tune.add_argument("--no-apply", action="store_true", help="report only; leave the repository entry as it is")
    tune.add_argument("--out", type=Path, default=REPORTS_DIR / "tune", help="folder for NAME.json/.csv/.png")
    tune.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    from attnserve.repository.entries import read_entry_spec
    from attnserve.tune.candidates import parse_layouts, parse_preferred
    from attnserve.tune.run import TuneOptions, default_grid, tune

    entry = args.repository / args.name
    if not entry.is_dir():
        raise UserInputError(f"no repository entry {entry}: export the model first (`attnserve export {args.name}`)")
    spec = read_entry_spec(entry)
    grid = default_grid(spec, args.runs_dir / args.name / "cpu_variants")
    updates: dict[str, object] = {}
    if args.delays_us:
        updates["max_queue_delay_us"] = tuple(args.delays_us)
    if args.max_batch_sizes:
        updates["max_batch_size"] = tuple(b for b in args.max_batch_sizes if b > 0)
    if args.layouts:
        updates["layouts"] = parse_layouts(args.layouts)
    if args.preferred:
        updates["preferred_batch_sizes"] = parse_preferred(args.preferred)
    if args.spinning:
        updates["allow_spinning"] = tuple(value == "on" for value in args.spinning.split(","))
    if args.no_variants:
        updates["variants"] = (None,)
    options = TuneOptions(
        repository=args.repository,
        slo_p99_ms=args.slo_p99_ms,
        levels=args.rate or args.concurrency or [1, 4, 16],
        traffic="rate" if args.rate else "concurrency",
        mode="exhaustive" if args.exhaustive else "quick",
        budget_s=args.budget_minutes * 60,
        grid=grid.model_copy(update=updates),
        url=args.url,
        grpc_url=args.grpc_url,
        admin_token=args.admin_token,
        out_dir=args.out,
        runs_dir=args.runs_dir,
        apply=not args.no_apply,
        verify=args.verify,
        confirm=not args.no_confirm,
        measurement={"window_s": args.window_s},
    )
    report = tune(args.name, options)
    return 0 if report.winner is not None else 3
