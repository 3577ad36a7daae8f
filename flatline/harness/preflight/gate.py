"""Preflight in the command line: its options, and the gate `flatline train` passes before any weights load.

    hooks = gate(cfg, options_from(args), log_book_hooks(cfg))   # FlatlineError (exit 2) on a refusal
    train(cfg, **hooks)                                         # on_start also writes preflight.txt / .json
"""
from __future__ import annotations

from flatline.common.errors import FlatlineError
from flatline.harness.preflight import Options, timed_preflight, write_findings
from flatline.harness.preflight.findings import SEVERITIES, refusal_line, refusals


def add_arguments(parser) -> None:
    """The options `flatline preflight` and `flatline train` share."""
    parser.add_argument("--gpu-mem", type=float, metavar="GIB",
                        help="the GPU's memory in GiB to check the estimate against, e.g. 80 (default: the visible "
                             "GPU's, else no device check)")
    parser.add_argument("--max-model-len", type=int, metavar="N",
                        help="a vLLM sampler's max_model_len: prompt plus completion must fit it")
    parser.add_argument("--vllm-share", type=float, default=0.0, metavar="F",
                        help="a colocated vLLM's gpu_memory_utilization (0 to 1), reserved from the device")


def options_from(args) -> Options:
    if args.gpu_mem is not None and not 0 < args.gpu_mem < 1e5:
        raise FlatlineError(f"--gpu-mem: {args.gpu_mem} GiB is not a device size; pass e.g. --gpu-mem 80")
    if args.max_model_len is not None and args.max_model_len < 1:
        raise FlatlineError(f"--max-model-len: must be a positive number of tokens, got {args.max_model_len}")
    if not 0 <= args.vllm_share < 1:
        raise FlatlineError(f"--vllm-share: a share of the device in [0, 1), got {args.vllm_share}")
    return Options(gpu_mem_gib=args.gpu_mem, max_model_len=args.max_model_len, vllm_share=args.vllm_share)


def exit_code(findings, fail_on: str) -> int:
    """1 when a finding is at or above `fail_on` (refuse or warn), else 0."""
    worst = SEVERITIES.index(fail_on)
    return 1 if any(SEVERITIES.index(f.severity) <= worst for f in findings) else 0


def gate(cfg, options: Options, hooks: dict, say=print) -> dict:
    """Run preflight; a refusal raises FlatlineError (one line). Otherwise say each warning and where W&B logs (once),
    and return `hooks` with an on_start that first writes the findings into the run directory."""
    findings, seconds = timed_preflight(cfg, options)
    if refusals(findings):
        raise FlatlineError(refusal_line(findings))
    for finding in findings:
        if finding.severity == "warn" or finding.check == "wandb":
            say(f"preflight: {finding.line(pad=False)}")
    counts = ", ".join(f"{sum(f.severity == s for f in findings)} {s}" for s in SEVERITIES[1:])
    say(f"preflight: {counts} in {seconds:.1f} s (all of it: RUN_DIR/preflight.txt)")
    started = hooks.get("on_start")

    def on_start(run_dir, tracker) -> None:
        write_findings(findings, run_dir, seconds)
        if started is not None:
            started(run_dir, tracker)

    return {**hooks, "on_start": on_start}
