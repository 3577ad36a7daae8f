"""Free disk for the run directory (runs have been lost to a full disk), and where W&B will log.

The run directory holds metrics.jsonl, samples.jsonl, W&B's offline copy, the report and its plots; flatline writes
no checkpoints, so its size grows with steps. The embedded model is converted once into the cache (float32
safetensors), which needs room on the cache's disk the first time.
"""
from __future__ import annotations

from flatline.harness.preflight.findings import Finding

MIB = 1024 ** 2
GIB = 1024 ** 3
# Bytes per optimizer step in metrics.jsonl with probes on (about 3 KB a row) and in W&B's offline copy of it.
METRICS_BYTES_PER_STEP = 8 * 1024
# The report, its plots and config.toml: a fixed allowance.
REPORT_BYTES = 5 * MIB
# Bytes per token of a logged sample: the prompt and completion texts, the masked text, JSON escaping.
SAMPLE_BYTES_PER_TOKEN = 12
# Free space to leave after the run: other runs, the OS and the checkpoint a user may add.
HEADROOM_BYTES = 1 * GIB


def run_dir_bytes(max_steps: int, log_completions: int, prompt_tokens: int, completion_tokens: int,
                  checkpoint_bytes: int = 0, checkpoints: int = 0) -> int:
    """An upper estimate of the run directory's size at the end of the run."""
    samples = max_steps * log_completions * (prompt_tokens + 2 * completion_tokens) * SAMPLE_BYTES_PER_TOKEN
    return max_steps * METRICS_BYTES_PER_STEP + samples + REPORT_BYTES + checkpoint_bytes * checkpoints


def disk_findings(where: str, free_bytes: int, needed_bytes: int, cache_where: str = "", cache_free: int = 0,
                  cache_needed: int = 0) -> list[Finding]:
    """refuse when the run (or the first conversion into the cache) cannot fit the free space; warn when it fits
    with less than HEADROOM_BYTES to spare."""
    findings = []
    for label, place, free, needed in (("run directory", where, free_bytes, needed_bytes),
                                       ("model cache", cache_where, cache_free, cache_needed)):
        if not needed:
            continue
        numbers = {"free_mib": round(free / MIB, 1), "needed_mib": round(needed / MIB, 1), "where": place}
        if free < needed:
            findings.append(Finding("disk", "refuse", f"{label} {place} needs about {needed / MIB:.0f} MiB and its "
                                    f"disk has {free / MIB:.0f} MiB free", numbers,
                                    "free space, or point output_dir (or $FLATLINE_CACHE) at a larger disk"))
        elif free - needed < HEADROOM_BYTES:
            findings.append(Finding("disk", "warn", f"{label} {place}: after about {needed / MIB:.0f} MiB the disk "
                                    f"keeps {(free - needed) / MIB:.0f} MiB free, under {HEADROOM_BYTES / MIB:.0f} MiB",
                                    numbers, "free space before a long run"))
        else:
            findings.append(Finding("disk", "info", f"{label} {place}: about {needed / MIB:.1f} MiB needed, "
                                    f"{free / GIB:.1f} GiB free", numbers))
    return findings


def wandb_findings(report_to: str, environ: dict, installed: bool) -> list[Finding]:
    """One line on where W&B logs: nowhere (off or not installed), offline (no key), or online."""
    if report_to != "wandb":
        return []
    if not installed:
        return [Finding("wandb", "info", "report_to = 'wandb' but wandb is not installed: logging locally only", {},
                        "pip install wandb, or set report_to = 'none'")]
    mode = environ.get("WANDB_MODE", "")
    if mode:
        return [Finding("wandb", "info", f"W&B mode {mode} (from WANDB_MODE)", {"mode": mode})]
    if not environ.get("WANDB_API_KEY"):
        return [Finding("wandb", "info", "no WANDB_API_KEY: W&B logs offline into RUN_DIR/wandb; upload later with "
                        "`wandb sync RUN_DIR/wandb/offline-run-*`", {"mode": "offline"},
                        "")]
    return [Finding("wandb", "info", "WANDB_API_KEY set: W&B logs online (offline, said once, when its host does not "
                    "answer within 3 s)", {"mode": "online"})]
