"""Per-step tool-call success and outcome of a `flatline train configs/tools.toml` run, first k vs last k steps.

    python bench/tools_learning.py RUN_DIR [K]     (K: steps per end, default 5)

Reads RUN_DIR/metrics.jsonl and trajectories.jsonl. Columns: reward, the outcome term's mean, the share of episodes
with a lookup that ran, calls that ran over calls attempted, calls per episode, turns, the step's seconds.
Output committed in reports/examples/tools-learning/figures.txt.
"""
import json, sys
from pathlib import Path
run = Path(sys.argv[1]); k = int(sys.argv[2]) if len(sys.argv) > 2 else 5
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
eps = [json.loads(l) for l in (run / "trajectories.jsonl").read_text().splitlines() if l.strip()]
by_step = {}
for e in eps:
    by_step.setdefault(e["step"], []).append(e)
print("step  reward  outcome  episodes_with_ok_call  call_success(ok/attempted)  calls/episode  turns  sec")
table = []
for r in rows:
    s = r["step"]; es = by_step.get(s, [])
    attempted = sum(e["calls_ok"] + e["calls_failed"] + e["parse_errors"] for e in es)
    ok = sum(e["calls_ok"] for e in es)
    with_ok = sum(e["calls_ok"] > 0 for e in es) / max(1, len(es))
    succ = ok / attempted if attempted else float("nan")
    table.append((r["reward"], r["episodes/outcome_mean"], with_ok, succ))
    print(f"{s:4d}  {r['reward']:6.3f}  {r['episodes/outcome_mean']:7.3f}  {with_ok:21.3f}  {succ:26.3f}  "
          f"{r['episodes/tool_calls_per_episode']:13.3f}  {r['episodes/turns_mean']:5.2f}  {r['step_time']:4.0f}")
def mean(xs): return sum(xs) / len(xs)
n = min(k, len(table) // 2)
for name, i in (("reward", 0), ("outcome", 1), ("episodes with a lookup that ran", 2), ("call success", 3)):
    print(f"{name}: first {n} steps {mean([t[i] for t in table[:n]]):.3f} -> last {n} steps {mean([t[i] for t in table[-n:]]):.3f}")
