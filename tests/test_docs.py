"""The docs cannot go stale: the hypothesis reference is the registry's, each count the docs state is the code's,
and the README's front-door outputs are what their commands print (`make docs` regenerates all of them)."""
import re
from pathlib import Path

import pytest

from flatline.harness import docs, front_doors

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Documents whose stated counts are checked against the code.
STATED = ("README.md", "docs/MANUAL.md", "docs/HYPOTHESES.md", "docs/DESIGN.md")
WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                    "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
NUMBER = r"(\d+|" + "|".join(WORDS) + r")"


def code_counts() -> dict[str, int]:
    """What a document may state a count of, and the code's count."""
    from flatline.diagnostics.judge import hypothesis_ids
    from flatline.diagnostics.readers.detect import FORMATS
    from flatline.diagnostics.verdict import REGISTRY, STATUSES
    from flatline.probes import ALL_PROBES
    from flatline.trainer.plugins import PLUG_POINTS

    ids = hypothesis_ids()
    families = {REGISTRY[i].family for i in ids}
    counts = {"hypotheses": len(ids), "hypothesis ids": len(ids), "families": len(families),
              "hypothesis families": len(families), "probes": len(ALL_PROBES), "probe classes": len(ALL_PROBES),
              "log formats": len([f for f in FORMATS if f != "auto"]), "plug points": len(PLUG_POINTS),
              "verdict statuses": len(STATUSES)}
    counts |= {f"{family} hypotheses": sum(REGISTRY[i].family == family for i in ids) for family in families}
    return counts


def stated_counts(text: str, nouns) -> list[tuple[str, int, str]]:
    """(noun, the number stated, the line) for every `N noun` in `text` (N in digits or words)."""
    found = []
    for noun in sorted(nouns, key=len, reverse=True):
        for match in re.finditer(rf"(?<![\w.-]){NUMBER} {re.escape(noun)}\b", text, flags=re.I):
            number = match.group(1).lower()
            line = text[text.rfind("\n", 0, match.start()) + 1:text.find("\n", match.end())]
            found.append((noun, int(number) if number.isdigit() else WORDS[number], line.strip()))
    return found


def test_the_hypothesis_reference_is_the_registrys():
    committed = (ROOT / "docs" / "HYPOTHESES.md").read_text(encoding="utf-8")
    assert committed == docs.hypothesis_reference(), "docs/HYPOTHESES.md is stale: run `make docs`"


def test_every_count_the_docs_state_is_the_codes():
    counts = code_counts()
    checked = []
    for name in STATED:
        for noun, stated, line in stated_counts((ROOT / name).read_text(encoding="utf-8"), counts):
            assert stated == counts[noun], f"{name} states {stated} {noun}, the code has {counts[noun]}: {line}"
            checked.append(noun)
    assert {"hypotheses", "families"} <= set(checked)  # the README's and the reference's own counts


def test_a_stale_count_is_caught():
    counts = code_counts()
    text = f"Every hypothesis ({counts['hypotheses'] - 6} ids, eleven families) and {counts['probes']} probes."
    found = stated_counts(text.replace(" ids,", " hypotheses,"), counts)
    assert ("hypotheses", counts["hypotheses"] - 6) in [(n, s) for n, s, _ in found]
    assert ("families", 11) in [(n, s) for n, s, _ in found] and ("probes", counts["probes"]) in [(n, s) for n, s, _ in found]


def test_the_reference_says_what_each_judge_reads():
    from flatline.diagnostics.verdict import REGISTRY

    docs.hypothesis_reference()  # registers the families
    drift = docs.reads(docs._judge_function(REGISTRY["kl.drift"]))
    assert "kl" in drift["metric"] and "beta" in drift["setting"]
    assert "reward" in drift["metric"]  # through the progress helper it calls
    dominance = docs.reads(docs._judge_function(REGISTRY["reward.component_dominance"]))
    assert any(name.startswith("reward/<") for name in dominance["metric"])


def test_the_readme_keeps_its_quick_start_and_size():
    text = README.read_text(encoding="utf-8")
    assert "## Quick start\n\n```\nmake train\nmake test\n```\n" in text
    assert "pip install flatline-rl" in text
    assert 120 <= len(text.splitlines()) <= 180
    assert set(front_doors.blocks(text)) == set(front_doors.BY_NAME)
    assert "](docs/img/report.png)" in text and (ROOT / "docs" / "img" / "report.png").read_bytes()[:4] == b"\x89PNG"


# Each door's command as the README shows it, run by front_doors.run (as `make docs` runs it), its quoted part
# compared after front_doors.normalised, which rewrites only what differs between two runs of one command: timings
# (`N s`; pytest's `(H:MM:SS)` and the `=` fill of its last line), the date and time in run names and the scratch
# folder's path; the TRL door's quote also leaves out other libraries' one-line notices on stdout, there or not with
# what is installed (DeepSpeed's accelerator notice; transformers' when WANDB_MODE=offline). Seconds on 2 free cores:
# diagnose ~5, train ~15, cases ~60 (both runs, every case), trl ~60 (SmolLM2 in TRL).
DOOR_TESTS = [
    pytest.param("diagnose"),
    pytest.param("train", marks=pytest.mark.slow),
    pytest.param("cases", marks=pytest.mark.slow),
    pytest.param("trl", marks=pytest.mark.trl),  # needs the [trl] extra: `make test-trl`
]


@pytest.mark.parametrize("name", DOOR_TESTS)
def test_the_readmes_front_door_output_is_its_commands(name):
    if name == "trl":
        pytest.importorskip("trl")
    assert front_doors.differing(README.read_text(encoding="utf-8"), names={name}) == [], \
        f"README.md's '{name}' output is stale: run `make docs`"


def test_every_front_door_is_run_by_a_test():
    assert {p.values[0] for p in DOOR_TESTS} == set(front_doors.BY_NAME) == set(front_doors.blocks(
        README.read_text(encoding="utf-8")))


def test_a_changed_output_is_caught():
    text = README.read_text(encoding="utf-8")
    body = front_doors.blocks(text)["diagnose"]
    counts = re.search(r"(\d+) fail,", body)
    changed = text.replace(body, body.replace(counts.group(0), f"{int(counts.group(1)) + 1} fail,"))
    assert front_doors.differing(changed, names={"diagnose"}) == ["diagnose"]
    assert front_doors.normalised("8 steps in 107 s, 3.2 s/step") == front_doors.normalised("8 steps in 9 s, 1 s/step")


def test_only_what_varies_is_normalised():
    same = front_doors.normalised
    assert same("===== 5 failed, 57 passed in 66.97s (0:01:06) =====") == same("=== 5 failed, 57 passed in 9.10s ===")
    assert same("report: reports/bandit-1207-173611/a.md") == same("report: reports/bandit-0101-000000/a.md")
    assert same("=== 5 failed, 57 passed in 9.10s ===") != same("=== 4 failed, 58 passed in 9.10s ===")
    flagged = "flagged at step 4 by gradients.no_flow; 4 steps in 57 s"
    assert same(flagged) == same(flagged.replace("57 s", "61 s")) != same(flagged.replace("step 4", "step 2"))
    assert same("update.too_small: 2.9e-07 of their norm") != same("update.too_small: 3.1e-07 of their norm")
