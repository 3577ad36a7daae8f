"""Run by tests/test_vllm.py in a fresh process per run (a vLLM engine is built once per process): train a config
with the vLLM sampler and the full probes, judge it, print one JSON line {"rows": [...], "verdicts": {id: status}}.

    python tests/vllm_run.py '{"config": "configs/bandit.toml", "set": ["sampler=vllm"], "mutate": null}'
"""
import dataclasses
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flatline.diagnostics.history import History  # noqa: E402
from flatline.diagnostics.judge import judge  # noqa: E402
from flatline.harness.selftest import faults  # noqa: E402
from flatline.probes import for_trainer  # noqa: E402
from flatline.trainer.config import load_config  # noqa: E402
from flatline.trainer.loop import build_trainer  # noqa: E402


def main(spec: dict) -> dict:
    cfg = load_config(spec["config"], ["probes=full", "report_to=none", "progress_bar=false", *spec.get("set", [])])
    trainer = build_trainer(cfg)
    trainer.listeners.extend(for_trainer(trainer))
    if spec.get("mutate"):
        getattr(faults, spec["mutate"])(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = [trainer.step() for _ in range(cfg.max_steps)]
    diagnosis = judge(History(run="vllm", rows=rows, config=dataclasses.asdict(cfg)))
    return {"rows": rows, "verdicts": {v.id: v.status for v in diagnosis.verdicts},
            "evidence": {v.id: v.evidence for v in diagnosis.verdicts if v.id.startswith("sync.")}}


if __name__ == "__main__":
    print("FLATLINE_RESULT " + json.dumps(main(json.loads(sys.argv[1])), default=str), flush=True)
