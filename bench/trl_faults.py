"""Planted faults in real TRL GRPOTrainer runs (SmolLM2-135M with LoRA, CPU), judged by FlatlineCallback.

    pip install -e ".[trl]"
    python bench/trl_faults.py                 # healthy + 6 faults, 8 steps each, judged live every 2 steps
    python bench/trl_faults.py --only lr_1e-7 --steps 8
    python bench/trl_faults.py --only frozen_adapter --steps 4   # the README's TRL front door (tests/test_docs.py)

Each row: the fault, how it was planted (through TRL's own arguments, a reward function or a callback: the plug
points a TRL user has), the hypotheses it must raise (fail or warn), the step at which the callback's live judgement
first raised one of them (judged every JUDGE_EVERY steps on the history so far), and what the final diagnosis says.
The healthy run must raise nothing. A reward function that raises stops TRL itself: its row reads the failed run
directory the callback left. TRL's own printing of each step's logs (its PrinterCallback, on when tqdm is off) is
removed, so that the output is the table alone. Output committed under reports/examples/trl_faults.txt.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from transformers.trainer_callback import PrinterCallback  # noqa: E402
from trl_runs import FreezeAdapterAtStart, correct_sum, trl_trainer  # noqa: E402

from flatline.diagnostics.history import History, load_history  # noqa: E402
from flatline.diagnostics.judge import judge  # noqa: E402
from flatline.integrations.trl import FlatlineCallback  # noqa: E402

JUDGE_EVERY = 2
FLAGGED = ("fail", "warn")


def none_reward(completions, **kwargs):
    """A verifier that cannot parse anything: None for every completion (TRL turns None into NaN)."""
    return [None] * len(completions)


def raising_reward(completions, **kwargs):
    raise KeyError("answer")


# name: (how, must raise one of, trainer overrides, extra callbacks before flatline's)
FAULTS = {
    "healthy": ("lr 2e-4, beta 0, LoRA r8", (), {}, []),
    "frozen_adapter": ("LoRA B frozen after the optimizer was built (a callback)",
                       ("update.weights_unchanged", "gradients.no_flow"), {}, [FreezeAdapterAtStart()]),
    "lr_1e-7": ("learning_rate=1e-7", ("update.too_small",), {"learning_rate": 1e-7}, []),
    "none_reward": ("a second reward function returning None", ("reward.parse_failures",),
                    {"reward_funcs": [correct_sum, none_reward]}, []),
    "raising_reward": ("a reward function that raises KeyError", ("reward.parse_failures",),
                       {"reward_funcs": [raising_reward]}, []),
    "beta_swamps": ("beta=50 (the KL term owns the gradient)", ("kl.penalty_dominates",), {"beta": 50.0}, []),
    "short_completions": ("max_completion_length=2 (no room for an answer and EOS)",
                          ("length.truncation", "reward.no_signal", "advantage.degenerate_groups"),
                          {"max_completion_length": 2}, []),
}


def first_flag(rows: list[dict], config: dict, targets) -> int | None:
    """The first step, judged every JUDGE_EVERY steps on the rows so far, at which a target was raised."""
    ends = list(range(JUDGE_EVERY, len(rows) + 1, JUDGE_EVERY))
    for end in ends + ([len(rows)] if len(rows) not in ends else []):  # and the last row (a run TRL stopped)
        diagnosis = judge(History(run="prefix", rows=rows[:end], config=config))
        if any(v.id in targets and v.status in FLAGGED for v in diagnosis.verdicts):
            return rows[end - 1]["step"]
    return None


def run_one(name: str, steps: int, root: Path) -> dict:
    how, targets, overrides, before = FAULTS[name]
    overrides = dict(overrides)
    callback = FlatlineCallback(run_dir=root / name, probes="cheap", judge_every=JUDGE_EVERY,
                                log_book=str(root / "LOG.md"), log=lambda *a: None)
    started = time.perf_counter()
    error = ""
    try:
        trainer = trl_trainer(root / f"{name}-trl", model="smollm2", callbacks=[*before, callback], max_steps=steps,
                              **overrides)
        trainer.remove_callback(PrinterCallback)  # TRL's print of each step's logs (training is unchanged)
        trainer.train()
    except Exception as exc:  # the raising reward: TRL stops, the callback settled the run directory
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    history = load_history(callback.run_dir)
    diagnosis = judge(history)
    flagged = {v.id: v.status for v in diagnosis.verdicts if v.status in FLAGGED}
    rows = [json.loads(line) for line in (callback.run_dir / "metrics.jsonl").read_text().splitlines()]
    hit = [t for t in targets if t in flagged]
    return {"name": name, "how": how, "targets": targets, "flagged": flagged, "hit": hit, "error": error,
            "step": first_flag(rows, history.config, targets) if targets else None, "steps": len(rows),
            "seconds": seconds, "reward": [r.get("reward") for r in rows]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--only", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    args = parser.parse_args()
    import trl
    print(f"Planted faults in real TRL {trl.__version__} GRPOTrainer runs: SmolLM2-135M-Instruct + LoRA r8 (all "
          f"linear), 2 prompts x 4 generations x up to 32 tokens per step, {args.steps} steps, CPU; "
          "FlatlineCallback(probes='cheap'), "
          f"judged every {JUDGE_EVERY} steps\n")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            r = run_one(name, args.steps, Path(tmp))
            if name == "healthy":
                ok = not r["flagged"]
                verdict = "quiet" if ok else f"FALSE ALARM: {r['flagged']}"
            else:
                ok = bool(r["hit"])
                verdict = (f"flagged at step {r['step']} by {', '.join(r['hit'])}" if ok
                           else f"MISSED (flagged: {r['flagged'] or 'nothing'})")
            bad += not ok
            print(f"{name:18s} {r['how']}")
            print(f"{'':18s} -> {verdict}; {r['steps']} steps in {r['seconds']:.0f} s"
                  + (f"; TRL stopped: {r['error']}" if r["error"] else ""))
            others = sorted(set(r["flagged"]) - set(r["targets"]))
            if others and name != "healthy":
                raised = ", ".join(f"{i} ({r['flagged'][i]})" for i in others)
                print(f"{'':18s}    also raised: {raised}")
    done = ("all flagged, healthy quiet" if "healthy" in args.only and len(args.only) > 1 else
            "healthy quiet" if "healthy" in args.only else "all flagged")
    print(f"\n{done if not bad else f'{bad} row(s) wrong'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
