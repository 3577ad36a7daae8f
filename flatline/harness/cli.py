"""The `flatline` command line.

    flatline train CONFIG [--set key=value ...] [--out DIR] [--probes none|cheap|full]
    flatline diagnose RUN_DIR_OR_LOG [--format md|json|html] [--fail-on fail|warn|inconclusive] [--control RUN] [--out DIR]
    flatline watch LOG [--interval S] [--fail-on fail|warn] [--format-in FORMAT] [--max-wait S] [--once]
    flatline log [--log-book PATH] [--status STATUS ...]
    flatline selftest [--full] [--episodes] [--only NAME ...] [--seeds N]
    flatline preflight CONFIG [--set key=value ...] [--gpu-mem GIB] [--max-model-len N] [--vllm-share F]
                      [--format text|json] [--fail-on refuse|warn]
    flatline compare RUN... [--by KEY] [--baseline NAME] [--metric NAME] [--last K] [--format md|json]
                     [--lower-is-better] [--task-key KEY] [--seed-key KEY] [--pattern P] [--skip-missing]

Exit codes: 0 done; 1 a verdict at or above --fail-on (or a selftest miss or false alarm, or a preflight finding at
or above its --fail-on, refuse by default); 2 bad input (config,
data, model location, log file), reported as one line on stderr before any model loads or any file is written;
3 an error raised while running (one line naming the user's plug-in file:line that raised it, or else a bug in
flatline; the traceback with FLATLINE_DEBUG=1); 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flatline.common.errors import FlatlineError
from flatline.common.record import PROBE_LEVELS
from flatline.diagnostics.logbook import STATUSES, check_log_book, log_book_path
from flatline.diagnostics.readers.detect import FORMATS as LOG_FORMATS
from flatline.harness.out_dir import check_out_dir
from flatline.harness.preflight.gate import add_arguments as add_preflight_arguments
from flatline.harness.preflight.gate import gate as preflight_gate
from flatline.harness.preflight.gate import options_from as preflight_options
from flatline.harness.run_log import log_book_hooks, log_evaluation

EXIT_FOUND = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
# Set to 1 to get the traceback of an internal error.
DEBUG_ENV = "FLATLINE_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flatline", description="Find out why a GRPO run is not learning.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train with probes on and write a run directory")
    train.add_argument("config", help="TOML config, e.g. configs/default.toml")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (repeatable), e.g. --set learning_rate=1e-4")
    train.add_argument("--out", help="run directory (a new suffix is added if it exists)")
    train.add_argument("--probes", choices=PROBE_LEVELS,
                       help="instruments to run (default: the config's `probes`, cheap unless set)")
    add_preflight_arguments(train)
    train.add_argument("--no-preflight", action="store_true", help="skip the checks run before any weights load")
    preflight = commands.add_parser("preflight", help="check a config before training: context, memory, LoRA, "
                                    "tokenizer, chat template, reward, disk, W&B (seconds, no GPU)")
    preflight.add_argument("config", help="TOML config, e.g. configs/default.toml")
    preflight.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config key (repeatable)")
    add_preflight_arguments(preflight)
    preflight.add_argument("--format", choices=("text", "json"), default="text", help="what to print (default text)")
    preflight.add_argument("--fail-on", choices=("refuse", "warn"), default="refuse",
                           help="exit 1 when a finding at or above this severity is found (default refuse)")
    diagnose = commands.add_parser("diagnose", help="re-judge a finished run from its metrics alone")
    diagnose.add_argument("run", help="a flatline run directory or another trainer's log: TRL trainer_state.json "
                                      "(or its output directory), HF/TRL console output captured to a file, a Jupyter "
                                      "notebook, a JSON array of log rows, a W&B run directory or CSV export (each "
                                      "run of it is judged), TensorBoard events, a verl JSONL or console log, a "
                                      "prime-rl JSONL, a metrics JSONL or CSV/TSV; '-' reads standard input, a .gz "
                                      "file is read decompressed")
    diagnose.add_argument("--format-in", choices=LOG_FORMATS, default="auto", metavar="FORMAT",
                          help="the log's format, one of: " + ", ".join(LOG_FORMATS) + " (default auto: detected "
                          "from the layout and the first rows)")
    diagnose.add_argument("--format", choices=("md", "json", "html"), default="md",
                          help="what to print (default md; html: report.html's self-contained page)")
    diagnose.add_argument("--fail-on", choices=("fail", "warn", "inconclusive"),
                          help="exit 1 when a verdict at or above this level is found (for CI)")
    diagnose.add_argument("--control", help="the control run (GSM8K-format) to judge control.learns against")
    diagnose.add_argument("--out", help="also write diagnosis.md, diagnosis.json, report.html and plots into this new directory")
    diagnose.add_argument("--log", action="store_true",
                          help="add this judgement to the run's log book entry (status gains EVALUATED)")
    watch = commands.add_parser("watch", help="follow a log still being written; print each verdict change")
    watch.add_argument("run", help="the log (or run directory) the trainer is writing, in any format diagnose reads")
    watch.add_argument("--format-in", choices=LOG_FORMATS, default="auto",
                       help="the log's format (default auto: detected from the layout and the first rows)")
    watch.add_argument("--interval", type=float, default=5.0, metavar="S",
                       help="seconds between looks at the log (default 5)")
    watch.add_argument("--fail-on", choices=("fail", "warn"), default="fail",
                       help="exit 1 as soon as a verdict at or above this level is there (default fail)")
    watch.add_argument("--max-wait", type=float, metavar="S",
                       help="stop (exit 0) when the log has not changed for S seconds (the run ended)")
    watch.add_argument("--once", action="store_true", help="judge the log as it stands and stop")
    log = commands.add_parser("log", help="print the experiment log book")
    log.add_argument("--log-book", default="", help="path (default: $FLATLINE_LOG, else reports/EXPERIMENT_LOG.md)")
    log.add_argument("--status", nargs="+", type=str.lower, choices=STATUSES, metavar="STATUS",
                     help=f"list only entries with any of these statuses, one line each ({', '.join(STATUSES)})")
    selftest = commands.add_parser("selftest", help="planted faults each verdict must catch; healthy runs stay quiet")
    selftest.add_argument("--full", action="store_true", help="every fault and healthy run (default: the CI subset)")
    selftest.add_argument("--only", nargs="+", metavar="NAME", help="run only these faults / healthy runs")
    selftest.add_argument("--episodes", action="store_true", help="only the multi-turn tool-episode rows (SmolLM2 on "
                          "configs/tools.toml: five planted faults and two healthy runs)")
    selftest.add_argument("--seeds", type=int, default=1, help="seeds per healthy run (default 1)")
    compare = commands.add_parser("compare", help="baseline vs variants per task over seeds: winner or tie")
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="run directories or logs; a folder of runs counts its subdirectories")
    compare.add_argument("--by", default="variant", metavar="KEY", help="the config key or KEY=VALUE path part that "
                         "names the variant (default variant)")
    compare.add_argument("--baseline", metavar="NAME", help="the baseline variant (default: the one named baseline)")
    compare.add_argument("--metric", default="reward", metavar="NAME", help="the metric to score (default reward)")
    compare.add_argument("--last", type=int, metavar="K", help="score: mean of the last K logged values (default: "
                         "the last 10%%, at least 1)")
    compare.add_argument("--format", choices=("md", "json"), default="md", help="what to print (default md)")
    compare.add_argument("--lower-is-better", action="store_true", help="the metric is a loss: lower wins")
    compare.add_argument("--task-key", default="task", metavar="KEY", help="the key naming the task (default task)")
    compare.add_argument("--seed-key", default="seed", metavar="KEY", help="the key naming the seed (default seed)")
    compare.add_argument("--pattern", help="fields of a path component, e.g. '{task}_{variant}_s{seed}' (default "
                         "{task}-{variant}-seed{seed} with the keys in use)")
    compare.add_argument("--skip-missing", action="store_true", help="leave out runs without the metric (listed)")
    return parser


def cmd_train(args) -> int:
    from flatline.probes import for_trainer
    from flatline.trainer.config import load_config
    from flatline.trainer.run import train

    overrides = args.overrides + ([f"probes={args.probes}"] if args.probes else [])
    cfg = load_config(args.config, overrides)
    check_out_dir("--out", args.out)
    check_log_book(log_book_path(cfg.log_book))
    hooks = log_book_hooks(cfg)
    if not args.no_preflight:
        hooks = preflight_gate(cfg, preflight_options(args), hooks)  # refuses before any weights load
    train(cfg, out=args.out, make_listeners=for_trainer, **hooks)
    return 0


def cmd_preflight(args) -> int:
    from flatline.harness.preflight import render_json, render_text, timed_preflight
    from flatline.harness.preflight.gate import exit_code
    from flatline.trainer.config import load_config

    findings, seconds = timed_preflight(load_config(args.config, args.overrides), preflight_options(args))
    emit(render_json(findings) if args.format == "json" else render_text(findings, seconds).rstrip("\n"))
    return exit_code(findings, args.fail_on)


def cmd_diagnose(args) -> int:
    import json
    import re

    from flatline.diagnostics.history import load_histories, load_history
    from flatline.diagnostics.judge import judge
    from flatline.diagnostics.report import html_page, render_json, render_markdown, write_report

    check_out_dir("--out", args.out, must_be_empty=True)
    histories = load_histories(args.run, args.format_in)  # one per run: a W&B export may hold several
    if args.log:
        for history in histories:
            check_log_book(log_book_path(history.setting("log_book", "") or ""))
    control = load_history(args.control) if args.control else None
    several = len(histories) > 1
    if several and args.format == "html":
        raise FlatlineError(f"{args.run} holds {len(histories)} runs and --format html prints one page: use --out DIR "
                            "(a report.html per run) or --format md|json")
    texts, found = [], False
    for history in histories:
        diagnosis = judge(history, control=control)
        if diagnosis.nothing_to_judge:
            named = f"{history.run}: " if several else ""
            print(f"flatline: warning: {named}{diagnosis.nothing_to_judge}", file=sys.stderr)
        out = None
        if args.out:  # several runs: one directory each under --out, named after the run
            out = Path(args.out) / re.sub(r"[^\w.=+-]+", "_", history.run) if several else Path(args.out)
            check_out_dir("--out", out, must_be_empty=True)  # again: judging took a while
            out.mkdir(parents=True, exist_ok=True)
            write_report(diagnosis, history, out)
        if args.log:
            log_evaluation(history, diagnosis, args.run, str(out) if out else None)
        render = {"json": render_json, "html": html_page, "md": render_markdown}[args.format]
        texts.append(render(diagnosis, history))
        found |= bool(args.fail_on and diagnosis.worst_at_or_above(args.fail_on))
    if args.format == "json":
        emit(json.dumps({"runs": texts} if several else texts[0], indent=2, allow_nan=False))
    elif args.format == "html":
        emit(texts[0].rstrip("\n"))
    else:
        lead = [f"{args.run} holds {len(texts)} runs; each is judged on its own below.\n"] if several else []
        emit("\n".join(lead + texts))
    return EXIT_FOUND if found else 0


def cmd_watch(args) -> int:
    from flatline.harness.watch import Options, watch

    options = Options(interval=args.interval, fail_on=args.fail_on, format_in=args.format_in,
                      max_wait=args.max_wait, once=args.once)
    return watch(args.run, options, out=emit)


def emit(text: str) -> None:
    """Print to stdout; a reader that stops early (`flatline diagnose --format json | head`) is no error: the rest
    is discarded and the exit code stays the diagnosis's."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        try:  # Python flushes stdout again at exit: let that go nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # a stdout without a file descriptor has nothing left to flush
            pass


def cmd_compare(args) -> int:
    import json

    from flatline.diagnostics.compare import CompareOptions, compare_runs, render_json, render_markdown

    result = compare_runs(args.runs, CompareOptions(
        metric=args.metric, by=args.by, baseline=args.baseline, last=args.last, task_key=args.task_key,
        seed_key=args.seed_key, pattern=args.pattern, lower_is_better=args.lower_is_better,
        skip_missing=args.skip_missing))
    if args.format == "json":
        emit(json.dumps(render_json(result), indent=2, allow_nan=False))
    else:
        emit(render_markdown(result).removesuffix("\n"))
    return 0


def cmd_selftest(args) -> int:
    from flatline.harness.selftest.faults import EPISODE_FAULTS, EPISODE_HEALTHY, FAULTS, HEALTHY
    from flatline.harness.selftest.matrix import render, run_matrix, select_cases

    cases = select_cases(FAULTS + HEALTHY + EPISODE_FAULTS + EPISODE_HEALTHY, args.full, args.only, args.episodes)
    results = run_matrix(cases, args.seeds, progress=lambda r: print(
        f"  {r.fault.name} seed {r.seed}: {r.seconds:.0f} s, failed {sorted(r.failed) or 'nothing'}", flush=True))
    print(render(results))
    return 1 if any(r.missed or r.false_alarms for r in results) else 0


def cmd_log(args) -> int:
    from flatline.diagnostics.logbook import LOG_ENV, entry_lines, read_log_book

    path = log_book_path(args.log_book)
    if path is None:
        raise FlatlineError(f"the log book is switched off (log_book / ${LOG_ENV} says off or {os.devnull}); "
                            f"pass --log-book PATH to read one")
    text = read_log_book(path)
    if not args.status:
        emit(text.removesuffix("\n"))
        return 0
    lines = [entry.text() for entry in entry_lines(text, args.status)]
    if lines:
        emit("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"train": cmd_train, "diagnose": cmd_diagnose, "log": cmd_log, "selftest": cmd_selftest,
                    "compare": cmd_compare, "preflight": cmd_preflight, "watch": cmd_watch}
        return commands[args.command](args)
    except FlatlineError as exc:
        say(f"flatline: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("flatline: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        say(f"flatline: {describe_internal_error(exc)}")
        return EXIT_INTERNAL


def say(line: str) -> None:
    """One line on stderr; a terminal that has gone away (SIGHUP, a closed pipe) changes no exit code."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def describe_internal_error(exc: BaseException) -> str:
    """One line: what was raised, where, and whose code it was (a user's plug-in, or flatline itself)."""
    frames = []
    where = exc.__traceback__
    while where is not None:
        frames.append((where.tb_frame.f_code.co_filename, where.tb_lineno))
        where = where.tb_next
    message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    users = [(file, line) for file, line in frames if _is_user_code(file)]
    if users:
        file, line = users[-1]
        return (f"error in your code at {Path(file).name}:{line}: {message}; the traceback: {DEBUG_ENV}=1")
    place = f" at {Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else ""
    return (f"internal error: {message}{place}; this is a bug in flatline: please report it with the command "
            f"and the traceback from {DEBUG_ENV}=1")


def _is_user_code(filename: str) -> bool:
    """Neither flatline's packages (flatline/, trainer/, probes/, diagnostics/), nor an installed library, nor the
    standard library."""
    path = os.path.realpath(filename)
    ours = {os.path.realpath(folder) for folder in _flatline_folders()}
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return not (any(path.startswith(p + os.sep) for p in ours | installed) or filename.startswith("<"))


def _flatline_folders() -> list[str]:
    """The folders flatline's code lives in: the package and each subpackage mapped elsewhere (pyproject's
    package-dir)."""
    import flatline
    import flatline.diagnostics
    import flatline.probes
    import flatline.trainer

    return [folder for package in (flatline, flatline.trainer, flatline.probes, flatline.diagnostics)
            for folder in package.__path__]

if __name__ == "__main__":
    sys.exit(main())
