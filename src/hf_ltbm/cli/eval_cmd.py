"""`hf-ltbm eval --model ID --task clotho --methods none,ltbm,global --keep-ratios 0.75,0.5,0.25 --out runs/`: the
paper's study (methods x compression x task), one resumable run folder per point; see `hf_ltbm.evaluation`.

Data-parallel: `accelerate launch -m hf_ltbm eval ...` or `torchrun --nproc-per-node N -m hf_ltbm eval ...`
(each process takes a share of the items; the main process gathers, de-duplicates and scores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import CLIError, add_model_arguments, float_list, input_error, int_list

HELP = (
    "evaluate methods x compression settings on captioning (Clotho, AudioCaps), multiple choice (MMAU) or speech "
    "recognition (LibriSpeech) (resumable, data-parallel)"
)


def _numbers(text: str, option: str, kind: str) -> list:
    try:
        return int_list(text) if kind == "integers" else float_list(text)
    except ValueError as err:
        raise CLIError(f"{option} expects comma-separated {kind}, got {text!r}.") from err


def add_parser(subparsers: Any) -> None:
    from ..config import KEY_SOURCES, MERGE_SPACES
    from ..evaluation.sweep import PRESERVE_NORM_CHOICES, SIZE_AWARE_CHOICES
    from ..evaluation.tasks import TASKS
    from ..merging import DEFAULT_WINDOW

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
    parser.add_argument("--windows", default=None, help=f"comma-separated LTBM windows (default: {DEFAULT_WINDOW})")
    parser.add_argument(
        "--size-aware",
        default="off",
        choices=SIZE_AWARE_CHOICES,
        help="size-aware attention for the averaging methods: off, on, or both (a sweep dimension)",
    )
    parser.add_argument(
        "--preserve-norm",
        default="off",
        choices=PRESERVE_NORM_CHOICES,
        help="norm-preserving merging for the averaging methods: off, on, or both (a sweep dimension)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option for the methods that take it, e.g. num_segments=10 (repeatable)",
    )
    parser.add_argument(
        "--space",
        default="encoder",
        choices=MERGE_SPACES,
        help="where every method reduces: encoder or projector output",
    )
    parser.add_argument(
        "--key-source", default="features", choices=KEY_SOURCES, help="what LTBM / Global Merge compare"
    )
    parser.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="[TASK=]TEXT",
        help="prompt for every task, or TASK=TEXT for one (repeatable; default: the task's; mmau fills {question} "
        "and {choices})",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="items per generate() call (left-padded)")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation length (default: the task's, 64; 256 for the librispeech tasks)",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N items (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="root folder of the run folders")
    parser.add_argument("--overwrite", action="store_true", help="redo runs whose folders exist")
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="score the saved predictions of finished runs again (current scorer), without loading the model",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def _per_task(entries: list[str], tasks: list[str], option: str) -> dict[str, str]:
    """`--data` / `--prompt` values by task: `TASK=VALUE` entries (for tasks not run they are ignored, so that one
    list serves several commands), or one plain value for every task."""
    values: dict[str, str] = {}
    given: dict[str, str] = {}  # task -> the entry that set it
    for entry in entries:
        name, sep, value = entry.partition("=")
        if sep and name in _known_tasks():
            targets = {name: value} if name in tasks else {}
        elif option == "--prompt" or len(tasks) == 1:
            targets = {task: entry for task in tasks}
        else:
            raise CLIError(f"{option} {entry!r}: with several tasks, write TASK=VALUE with TASK among {tasks}.")
        for task, value in targets.items():
            if task in given:
                raise CLIError(f"{option} was given twice for {task}: {given[task]!r} and {entry!r}; pass one.")
            given[task], values[task] = entry, value
    return values


def _score_only(task_objects: list, specs: list, args: argparse.Namespace) -> int:
    """`--score-only`: rescore the finished runs of the sweep from their saved predictions; prints the table."""
    from ..evaluation.report import collect_runs, markdown
    from ..evaluation.runner import rescore

    results = [result for task in task_objects for result in rescore(task, specs, args.out, args.model)]
    scored = [r for r in results if r.metrics]
    print(f"{len(scored)} run(s) rescored in {args.out} ({len(results) - len(scored)} without finished predictions).")
    if scored:
        runs = [r for r in collect_runs(args.out) if any(r.path == res.path for res in scored)]
        print(markdown(runs))
    return 0


def _known_tasks() -> list[str]:
    from ..evaluation.tasks import TASKS

    return list(TASKS)


def _evaluate_task(model: Any, processor: Any, task: Any, specs: list, device: Any, args: Any) -> list:
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
        extra_config={"device": str(device)},
    )


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from ..audio import AudioInputError
    from ..evaluation.captioning import MetricUnavailableError
    from ..evaluation.report import collect_runs, markdown
    from ..evaluation.runner import expand_sweep
    from ..evaluation.tasks import get_task
    from ..loading import load_model, load_processor, resolve_device, resolve_dtype
    from .common import method_list, option_dict

    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in _known_tasks()]
    if not tasks or unknown:
        raise CLIError(f"--task {args.task!r}: choose among {', '.join(_known_tasks())}.")
    for value, option in ((args.batch_size, "--batch-size"), (args.max_new_tokens, "--max-new-tokens")):
        if value is not None and value < 1:
            raise CLIError(f"{option} must be >= 1, got {value}.")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}.")
    # one process per GPU under accelerate launch / torchrun; CPU-only (or --device cpu) processes talk over gloo.
    # The other processes wait while the main one scores (SPICE on a full set takes minutes): a generous timeout.
    from datetime import timedelta

    import torch

    cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    state = PartialState(cpu=cpu, timeout=timedelta(hours=2))
    try:
        specs = expand_sweep(
            method_list(args.methods),
            _numbers(args.keep_ratios, "--keep-ratios", "numbers"),
            _numbers(args.windows, "--windows", "integers") if args.windows else None,
            args.size_aware,
            option_dict(args.option),
            space=args.space,
            key_source=args.key_source,
            preserve_norm=args.preserve_norm,
        )
        sources = _per_task(args.data, tasks, "--data")
        prompts = _per_task(args.prompt, tasks, "--prompt")
        task_objects = [get_task(name, sources.get(name), prompts.get(name)) for name in tasks]
        for task in task_objects:  # scorer and data are checked before the weights load
            task.check_requirements()
            if not args.score_only:  # the saved predictions hold what scoring needs
                with state.main_process_first():  # downloads and archive unpacking happen once
                    task.load()
        if args.score_only:
            return _score_only(task_objects, specs, args) if state.is_main_process else 0
    except (MetricUnavailableError, ValueError) as err:
        raise CLIError(str(err)) from err
    device = state.device if args.device == "auto" and state.num_processes > 1 else resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    processor = load_processor(args.model, None)
    model = load_model(args.model, None, device, dtype)
    results = []
    for task in task_objects:
        try:
            results += _evaluate_task(model, processor, task, specs, device, args)
        except AudioInputError as err:
            raise input_error(err) from err
        except KeyboardInterrupt:
            # every finished batch is on disk (per-rank partial files); the same command resumes the run
            print(
                f"Interrupted. Finished batches are saved in {args.out}; run the same command again to resume.",
                file=sys.stderr,
            )
            return 130
    if state.is_main_process:
        skipped = sum(r.skipped for r in results)
        resumed = sum(r.resumed_items > 0 for r in results)
        print(
            f"{len(results)} run(s) in {args.out} ({skipped} finished earlier and skipped, {resumed} resumed from "
            "an interrupted attempt)."
        )
        runs = [r for r in collect_runs(args.out) if any(r.path == res.path for res in results)]
        print(markdown(runs))
        print(f"Full report: hf-ltbm report {args.out}")
    return 0
