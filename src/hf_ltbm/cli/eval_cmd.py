"""`hf-ltbm eval --model ID --task clotho --methods none,ltbm,global --keep-ratios 0.75,0.5,0.25 --out runs/`: the
paper's study (methods x compression x task), one resumable run folder per point; see `hf_ltbm.evaluation`.

Data-parallel: `accelerate launch -m hf_ltbm eval ...` or `torchrun --nproc-per-node N -m hf_ltbm eval ...`
(each process takes a share of the items; the main process gathers, de-duplicates and scores).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..audio import AudioInputError
from .common import (
    CLIError,
    add_model_arguments,
    input_error,
    load_model,
    load_processor,
    resolve_device,
    resolve_dtype,
)

HELP = "evaluate methods x compression settings on Clotho, AudioCaps or MMAU (resumable, data-parallel)"


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise CLIError(f"{option} expects comma-separated numbers, got {text!r}.") from err


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise CLIError(f"{option} expects comma-separated integers, got {text!r}.") from err


def add_parser(subparsers: Any) -> None:
    from ..evaluation.runner import SIZE_AWARE_CHOICES
    from ..evaluation.tasks import TASKS

    parser = subparsers.add_parser("eval", help=HELP, description=HELP)
    add_model_arguments(parser)
    parser.add_argument("--task", required=True, help=f"comma-separated tasks among {', '.join(TASKS)}")
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[TASK=]PATH_OR_ID",
        help="data source: a local folder in the original format or a hub id (default: the public hub copy); "
        "TASK=... when several tasks run (repeatable)",
    )
    parser.add_argument("--methods", default="none,ltbm,global,pool,prune_norm", help="comma-separated methods")
    parser.add_argument("--keep-ratios", default="0.75,0.5,0.25", help="comma-separated keep ratios in (0, 1]")
    parser.add_argument("--windows", default=None, help="comma-separated LTBM windows (default: 3)")
    parser.add_argument(
        "--size-aware",
        default="off",
        choices=SIZE_AWARE_CHOICES,
        help="size-aware attention for the averaging methods: off, on, or both (a sweep dimension)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option for the methods that take it, e.g. num_segments=10 (repeatable)",
    )
    parser.add_argument("--prompt", default=None, help="prompt (default: the task's; mmau fills {question} {choices})")
    parser.add_argument("--batch-size", type=int, default=8, help="items per generate() call (left-padded)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="only the first N items (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="root folder of the run folders")
    parser.add_argument("--overwrite", action="store_true", help="redo runs whose folders exist")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def _sources(args: argparse.Namespace, tasks: list[str]) -> dict[str, str]:
    sources: dict[str, str] = {}
    for entry in args.data:
        name, sep, value = entry.partition("=")
        if sep and name in tasks:
            sources[name] = value
        elif len(tasks) == 1 and not (sep and name in _known_tasks()):
            sources[tasks[0]] = entry
        else:
            raise CLIError(f"--data {entry!r}: with several tasks, write TASK=PATH with TASK among {tasks}.")
    return sources


def _known_tasks() -> list[str]:
    from ..evaluation.tasks import TASKS

    return list(TASKS)


def _evaluate_task(model: Any, processor: Any, task: Any, specs: list, device: Any, dtype: Any, args: Any) -> list:
    from ..evaluation.runner import evaluate

    return evaluate(
        model,
        processor,
        task,
        specs,
        args.out,
        model_name=args.model,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        overwrite=args.overwrite,
        show_progress=not args.no_progress,
        extra_config={"device": str(device), "dtype": str(dtype).replace("torch.", "")},
    )


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from ..evaluation.captioning import MetricUnavailableError
    from ..evaluation.report import collect_runs, markdown
    from ..evaluation.runner import expand_sweep
    from ..evaluation.tasks import get_task
    from .common import _options, method_list

    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in _known_tasks()]
    if not tasks or unknown:
        raise CLIError(f"--task {args.task!r}: choose among {', '.join(_known_tasks())}.")
    for value, option in ((args.batch_size, "--batch-size"), (args.max_new_tokens, "--max-new-tokens")):
        if value < 1:
            raise CLIError(f"{option} must be >= 1, got {value}.")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}.")
    try:
        specs = expand_sweep(
            method_list(args.methods),
            _floats(args.keep_ratios, "--keep-ratios"),
            _ints(args.windows, "--windows") if args.windows else None,
            args.size_aware,
            _options(args.option),
        )
        sources = _sources(args, tasks)
        task_objects = [get_task(name, sources.get(name), args.prompt) for name in tasks]
        for task in task_objects:  # scorer and data are checked before the weights load
            task.check_requirements()
            task.load()
    except MetricUnavailableError as err:
        raise CLIError(str(err)) from err
    except ValueError as err:
        raise CLIError(str(err)) from err
    # one process per GPU under accelerate launch / torchrun; CPU-only (or --device cpu) processes talk over gloo
    import torch

    state = PartialState(cpu=args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available()))
    device = state.device if args.device == "auto" and state.num_processes > 1 else resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    processor = load_processor(args.model, None)
    model = load_model(args.model, None, device, dtype)
    results = []
    for task in task_objects:
        try:
            results += _evaluate_task(model, processor, task, specs, device, dtype, args)
        except AudioInputError as err:
            raise input_error(err) from err
    if state.is_main_process:
        skipped = sum(r.skipped for r in results)
        print(f"{len(results)} run(s) in {args.out} ({skipped} finished earlier and skipped).")
        runs = [r for r in collect_runs(args.out) if any(r.path == res.path for res in results)]
        print(markdown(runs))
        print(f"Full report: hf-ltbm report {args.out}")
    return 0
