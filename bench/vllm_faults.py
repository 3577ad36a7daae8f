"""Run one planted vLLM fault (or the healthy vLLM run) of flatline.harness.selftest.faults, printing each step's sync numbers,
then the flagged hypotheses and the sync verdicts. Needs .venv-vllm (make test-vllm).

    PYTHONPATH=. .venv-vllm/bin/python bench/vllm_faults.py vllm_default /tmp/vllm-runs
    PYTHONPATH=. .venv/bin/python bench/vllm_faults.py vllm_default /tmp/vllm-runs/vllm_default-seed0 --judge
    (--judge: no training, judge a run this script saved, with the judges as they are now)
    (cases: vllm_default, vllm_sync_every_1000, vllm_lora_id_reused, vllm_bf16_merged, vllm_bf16_merged_small_updates,
    vllm_raw_logprobs)
"""
import sys, time, dataclasses, json, warnings
from pathlib import Path
from flatline.harness.selftest.faults import VLLM_FAULTS, VLLM_HEALTHY
from flatline.harness.selftest.matrix import case_config, save_run
from flatline.diagnostics.history import History
from flatline.diagnostics.judge import judge
from flatline.probes import for_trainer
from flatline.trainer.loop import build_trainer
warnings.simplefilter("ignore")
name, out, steps = sys.argv[1], Path(sys.argv[2]), None
fault = next(c for c in VLLM_HEALTHY + VLLM_FAULTS if c.name == name)
cfg = case_config(fault, 0, steps)


def report(d) -> None:
    """The flagged hypotheses against the fault's must-fail list, then the sync and flagged verdicts."""
    flagged = sorted(v.id for v in d.verdicts if v.status in ("fail", "warn"))
    print("FLAGGED", flagged, "must", sorted(fault.must_fail), "false_alarms", sorted(set(flagged) - set(fault.allowed)),
          flush=True)
    for v in d.verdicts:
        if v.id.startswith("sync.") or v.status in ("fail", "warn"):
            print("VERDICT", v.message().replace("\n", " | ")[:1200], flush=True)


if "--judge" in sys.argv:
    from flatline.diagnostics.history import load_history
    report(judge(load_history(out)))
    sys.exit(0)
t0 = time.time()
trainer = build_trainer(cfg); trainer.listeners.extend(for_trainer(trainer))
if fault.mutate: fault.mutate(trainer)
print("built", round(time.time() - t0), flush=True)
rows = []
keys = ("reward", "step_time", "sampler/weights_lag", "sync/logprob_diff_mean", "sync/logprob_diff_max", "sync/probs_diff_mean", "sync/log_ratio_mean", "sync/is_weight_mean", "sync/ess", "sync/tracking", "sync/tracking_se", "sync/policy_drift", "sync/merged_update_kept", "sync/merged_update_changed", "sync/merged_total_kept", "sync/merged_total_changed")
for _ in range(cfg.max_steps):
    rows.append(trainer.step())
    print(rows[-1]["step"], {k: round(rows[-1][k], 6) for k in keys if k in rows[-1]}, flush=True)
save_run(out / f"{name}-seed0", cfg, rows)
d = judge(History(run=name, rows=rows, config=dataclasses.asdict(cfg)))
report(d)
print("evidence", json.dumps({v.id: v.evidence for v in d.verdicts if v.id.startswith("sync.")}, default=str), flush=True)
