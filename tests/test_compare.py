"""`flatline compare`: the seed table (3 tasks x 2 variants x 3 seeds of flatline run directories with known scores),
runs without configs labelled from their paths (a world-model RL run's reward and plan_reward), the JSON shape, the
label rules, the statistics' edge cases, and every bad-input path (exit 2, one line naming the run or key)."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from flatline.common.errors import FlatlineError
from flatline.common.jsonl import JsonlWriter
from flatline.diagnostics.compare import CompareOptions, compare_runs, render_json, render_markdown
from flatline.diagnostics.compare.labels import (
    canonical,
    config_value,
    path_components,
    path_pairs,
    pattern_values,
    run_labels,
    seed_token,
)
from flatline.diagnostics.compare.runs import window_size
from flatline.diagnostics.compare.stats import ALPHA, Cell, compare_cells
from flatline.diagnostics.history import load_history
from flatline.harness.cli import main

_PATH = Path(__file__).resolve().parents[1] / "bench" / "compare_example.py"
_SPEC = importlib.util.spec_from_file_location("compare_example", _PATH)
example = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = example
_SPEC.loader.exec_module(example)

SEED_TABLE_FLAGS = ["--by", "learning_rate", "--baseline", "1e-5"]


@pytest.fixture(scope="module")
def seed_table(tmp_path_factory):
    """The 18 flatline run directories of bench/compare_example.py's SEED_TABLE."""
    root = tmp_path_factory.mktemp("seed_table") / "runs"
    return root, [str(p) for p in example.write_seed_table(root)]


def write_log(path: Path, rows: list[dict], config: dict | None = None) -> Path:
    """A metrics .jsonl (written by flatline's JsonlWriter), with a config.toml beside it when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = JsonlWriter(path)
    for row in rows:
        writer.write(row)
    writer.close()
    if config is not None:
        (path.parent / "config.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    return path


def flat(score: float, steps: int = 10, metric: str = "reward", **others) -> list[dict]:
    """`steps` rows whose metric is `score` on every step (plus constant other metrics)."""
    return [{"step": s, metric: score, **others} for s in range(1, steps + 1)]


def write_run(root: Path, name: str, score: float, config: dict | None = None, **others) -> str:
    write_log(root / name / "metrics.jsonl", flat(score, **others), config)
    return str(root / name)


def compare_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["compare", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------- the seed table


def test_seed_table_gives_the_known_winners_means_and_percent_differences(seed_table):
    _, runs = seed_table
    result = compare_runs(runs, CompareOptions(by="learning_rate", baseline="1e-5"))
    assert result.baseline == "1e-05" and result.variants == ["1e-05", "0.0001"]
    assert result.tasks == ["arithmetic", "gsm8k", "musique"]
    by_task = {c.task: c for c in result.comparisons}
    assert [(c.task, c.verdict, c.winner) for c in result.comparisons] == [
        ("arithmetic", "variant", "0.0001"), ("gsm8k", "baseline", "1e-05"), ("musique", "tie", None)]
    expected = {  # task: (baseline mean, variant mean, percent difference)
        "arithmetic": (0.42, 0.62, 0.20 / 0.42 * 100),
        "gsm8k": (0.52, 0.33, -0.19 / 0.52 * 100),
        "musique": (0.25, 0.26, 0.01 / 0.25 * 100),
    }
    for task, (base_mean, variant_mean, percent) in expected.items():
        c = by_task[task]
        assert (c.baseline.n, c.variant.n) == (3, 3)
        assert c.baseline.mean == pytest.approx(base_mean) and c.variant.mean == pytest.approx(variant_mean)
        assert c.difference == pytest.approx(variant_mean - base_mean)
        assert c.percent == pytest.approx(percent)
        assert c.baseline.seeds == ("0", "1", "2") == c.variant.seeds
    assert by_task["arithmetic"].p_value < 0.001 and by_task["gsm8k"].p_value < 0.01
    assert by_task["musique"].p_value > 0.5
    assert by_task["arithmetic"].baseline.std == pytest.approx(0.02)
    assert by_task["gsm8k"].variant.std == pytest.approx(0.03)
    assert len(result.cells) == 6 and len(result.runs) == 18 and result.left_out == []
    assert {(r.task.source, r.variant.source, r.seed.source) for r in result.runs} == {("config", "config", "config")}


def test_a_run_is_scored_on_its_last_tenth_not_its_final_value_or_its_whole_run(seed_table):
    _, runs = seed_table
    run = next(r for r in compare_runs(runs, CompareOptions(by="learning_rate", baseline="1e-5")).runs
               if r.path.endswith("arithmetic-lr0.0001-seed1"))
    assert (run.values, run.logged, run.first_step, run.last_step) == (5, 50, 46, 50)
    assert run.score == pytest.approx(0.62)  # the final value alone is 0.64, the whole run's mean about 0.34
    final = compare_runs(runs, CompareOptions(by="learning_rate", baseline="1e-5", last=1))
    assert next(r.score for r in final.runs if r.path == run.path) == pytest.approx(0.64)
    assert [window_size(n, None) for n in (1, 5, 10, 11, 50, 51, 200)] == [1, 1, 1, 2, 5, 6, 20]
    assert window_size(3, 10) == 3 and window_size(100, 7) == 7


def test_cli_prints_the_table_and_every_runs_labels(seed_table, capsys):
    root, runs = seed_table
    code, out, err = compare_cli(capsys, *runs, *SEED_TABLE_FLAGS)
    assert code == 0 and err == ""
    assert out.startswith("# flatline compare: `reward` by `learning_rate`")
    assert "last 10% of logged values (rounded up, at least 1); higher is better" in out
    assert "| arithmetic | 0.0001 | 0.420 ± 0.020 (n=3) | 0.620 ± 0.020 (n=3) | +0.200 | +47.6% |" in out
    assert "**1e-05** (baseline) |" in out.split("| gsm8k |")[1].splitlines()[0]
    assert out.split("| musique |")[1].splitlines()[0].endswith("| tie |")
    assert out.count(f"| {root}/") == 18 and "| config, config, config |" in out


def test_json_has_the_documented_shape(seed_table, capsys):
    _, runs = seed_table
    code, out, _ = compare_cli(capsys, *runs, *SEED_TABLE_FLAGS, "--format", "json")
    data = json.loads(out)
    assert code == 0 and set(data) == {"metric", "window", "last", "higher_is_better", "test", "alpha", "by",
                                       "task_key", "seed_key", "pattern", "baseline", "tasks", "variants", "runs",
                                       "cells", "comparisons", "left_out"}
    assert (data["metric"], data["by"], data["baseline"], data["test"], data["alpha"]) == (
        "reward", "learning_rate", "1e-05", "welch", ALPHA)
    assert data["higher_is_better"] is True and data["last"] is None
    assert data["pattern"] == "{task}-{learning_rate}-seed{seed}"
    assert set(data["runs"][0]) == {"path", "task", "variant", "seed", "sources", "score", "values", "logged",
                                    "first_step", "last_step"}
    assert data["runs"][0]["sources"] == {"task": "config", "variant": "config", "seed": "config"}
    assert data["cells"][0] == {"task": "arithmetic", "variant": "1e-05", "n": 3, "mean": pytest.approx(0.42),
                                "std": pytest.approx(0.02), "seeds": ["0", "1", "2"]}
    comparison = data["comparisons"][0]
    assert set(comparison) == {"task", "baseline", "variant", "n_baseline", "n_variant", "mean_baseline",
                               "mean_variant", "std_baseline", "std_variant", "difference", "percent", "p_value",
                               "verdict", "winner", "reason"}
    assert [(c["task"], c["verdict"], c["winner"]) for c in data["comparisons"]] == [
        ("arithmetic", "variant", "0.0001"), ("gsm8k", "baseline", "1e-05"), ("musique", "tie", None)]
    assert data["left_out"] == []


def test_the_committed_example_is_what_the_bench_script_prints(seed_table):
    root, _ = seed_table
    committed = Path(__file__).resolve().parents[1] / "reports" / "examples" / "compare_seed_table.md"
    assert committed.read_text(encoding="utf-8") == example.example(root.parent)


def test_a_folder_of_runs_counts_its_subdirectories_once_each(seed_table, tmp_path):
    root, runs = seed_table
    by_folder = compare_runs([str(root)], CompareOptions(by="learning_rate", baseline="1e-5"))
    by_glob = compare_runs(runs, CompareOptions(by="learning_rate", baseline="1e-5"))
    assert [r.path for r in by_folder.runs] == [r.path for r in by_glob.runs]
    twice = compare_runs([str(root), runs[0]], CompareOptions(by="learning_rate", baseline="1e-5"))
    assert len(twice.runs) == 18 and twice.left_out == [(runs[0], f"the same run as {runs[0]}")]


# ------------------------------------------------------------------------------------------- runs without configs


def world_model_rows(reward: float, plan_reward: float, steps: int = 20) -> list[dict]:
    """A non-LLM run (a world-model agent): reward and plan_reward per step, nothing else."""
    return [{"step": 1000 * s, "reward": reward + 0.01 * (s % 2), "plan_reward": plan_reward} for s in range(steps)]


WORLD_MODEL = {  # (task, variant) -> (reward, plan_reward) of seeds 0, 1, 2
    ("walker", "dreamer"): [(500, 400), (520, 410), (510, 405)],
    ("walker", "ours"): [(600, 300), (615, 310), (590, 305)],
    ("cheetah", "dreamer"): [(300, 200), (320, 250), (310, 230)],
    ("cheetah", "ours"): [(305, 210), (315, 240), (312, 220)],
}


@pytest.fixture
def hydra_runs(tmp_path):
    """runs/task=T/variant=V/seed=S/metrics.jsonl, no config anywhere."""
    for (task, variant), seeds in WORLD_MODEL.items():
        for seed, (reward, plan) in enumerate(seeds):
            write_log(tmp_path / "runs" / f"task={task}" / f"variant={variant}" / f"seed={seed}" / "metrics.jsonl",
                      world_model_rows(reward, plan))
    return sorted(str(p) for p in (tmp_path / "runs").glob("*/*/*"))


def test_runs_without_configs_take_their_labels_from_key_value_path_components(hydra_runs):
    result = compare_runs(hydra_runs, CompareOptions(baseline="dreamer"))
    assert result.tasks == ["cheetah", "walker"] and result.variants == ["dreamer", "ours"]
    assert {(r.task.source, r.variant.source, r.seed.source) for r in result.runs} == {("path", "path", "path")}
    verdicts = {c.task: (c.verdict, c.winner, c.baseline.n, c.variant.n) for c in result.comparisons}
    assert verdicts == {"walker": ("variant", "ours", 3, 3), "cheetah": ("tie", None, 3, 3)}


def test_another_metric_of_the_same_runs_turns_the_verdict(hydra_runs, capsys):
    code, out, _ = compare_cli(capsys, *hydra_runs, "--baseline", "dreamer", "--metric", "plan_reward",
                               "--format", "json")
    verdicts = {c["task"]: (c["verdict"], c["winner"]) for c in json.loads(out)["comparisons"]}
    assert code == 0 and verdicts == {"walker": ("baseline", "dreamer"), "cheetah": ("tie", None)}
    log_files = [str(Path(p) / "metrics.jsonl") for p in hydra_runs]  # the log files themselves: same labels
    assert [r.variant.value for r in compare_runs(log_files, CompareOptions(baseline="dreamer")).runs] == \
        ["dreamer"] * 3 + ["ours"] * 3 + ["dreamer"] * 3 + ["ours"] * 3


def test_hydra_multirun_directories_take_their_labels_from_the_overrides(tmp_path):
    sweep = tmp_path / "multirun" / "2026-11-30" / "12-00-00"  # Hydra names the runs 0, 1, 2, ...
    jobs = [(task, variant, seed, scores) for (task, variant), seeds in WORLD_MODEL.items()
            for seed, scores in enumerate(seeds)]
    for number, (task, variant, seed, (reward, plan)) in enumerate(jobs):
        write_log(sweep / str(number) / "metrics.jsonl", world_model_rows(reward, plan))
        (sweep / str(number) / ".hydra").mkdir()
        (sweep / str(number) / ".hydra" / "overrides.yaml").write_text(
            f"- task={task}\n- +algo={variant}\n- 'seed={seed}'\n")
    result = compare_runs([str(sweep)], CompareOptions(by="algo", baseline="dreamer"))
    assert len(result.runs) == 12 and {(r.task.source, r.variant.source, r.seed.source) for r in result.runs} == {
        ("hydra",) * 3}
    assert {c.task: c.winner for c in result.comparisons} == {"walker": "ours", "cheetah": None}


def test_log_files_named_task_variant_seed_are_read_by_the_default_pattern(tmp_path):
    for (task, variant), seeds in WORLD_MODEL.items():
        for seed, (reward, plan) in enumerate(seeds):
            write_log(tmp_path / "logs" / f"{task}-{variant}-seed{seed}.jsonl", world_model_rows(reward, plan))
    result = compare_runs(sorted(str(p) for p in (tmp_path / "logs").iterdir()), CompareOptions(baseline="dreamer"))
    assert {(r.task.source, r.variant.source, r.seed.source) for r in result.runs} == {("pattern",) * 3}
    assert {c.task: c.winner for c in result.comparisons} == {"walker": "ours", "cheetah": None}


def test_a_pattern_reads_other_names_and_seed_tokens_fill_in_the_seed(tmp_path):
    runs = []
    for (task, variant), seeds in WORLD_MODEL.items():
        for seed, (reward, plan) in enumerate(seeds):
            runs.append(str(write_log(tmp_path / f"{task}_{variant}_s{seed}" / "metrics.jsonl",
                                      world_model_rows(reward, plan)).parent))
    result = compare_runs(runs, CompareOptions(baseline="dreamer", pattern="{task}_{variant}_s{seed}"))
    assert {c.task: c.winner for c in result.comparisons} == {"walker": "ours", "cheetah": None}
    token = compare_runs(runs, CompareOptions(baseline="dreamer", pattern="{task}_{variant}_{rest}"))
    assert {(r.seed.source, r.seed.value) for r in token.runs} == {("seed token", s) for s in ("0", "1", "2")}


def test_csv_logs_compare_once_load_history_reads_them(tmp_path):
    probe = tmp_path / "probe.csv"
    probe.write_text("step,reward\n1,0.5\n")
    try:
        load_history(probe)
    except FlatlineError:
        pytest.skip("load_history does not read CSV yet (the log readers land separately)")
    runs = []
    for (task, variant), seeds in WORLD_MODEL.items():
        for seed, (reward, plan) in enumerate(seeds):
            path = tmp_path / "csv" / f"task={task}" / f"variant={variant}" / f"seed={seed}" / "progress.csv"
            path.parent.mkdir(parents=True)
            rows = world_model_rows(reward, plan)
            path.write_text("step,reward,plan_reward\n" + "".join(
                f"{r['step']},{r['reward']},{r['plan_reward']}\n" for r in rows))
            runs.append(str(path))
    result = compare_runs(runs, CompareOptions(baseline="dreamer", metric="plan_reward"))
    assert {c.task: c.winner for c in result.comparisons} == {"walker": "dreamer", "cheetah": None}


def test_lower_is_better_makes_the_lower_loss_win(tmp_path):
    runs = [write_run(tmp_path, f"{variant}-seed{seed}", loss + 0.01 * seed, metric="loss",
                      config={"task": "math", "seed": seed, "variant": variant})
            for variant, loss in (("baseline", 1.0), ("warmup", 0.5)) for seed in range(3)]
    higher = compare_runs(runs, CompareOptions(metric="loss"))
    lower = compare_runs(runs, CompareOptions(metric="loss", lower_is_better=True))
    assert higher.comparisons[0].winner == "baseline" and lower.comparisons[0].winner == "warmup"
    assert lower.comparisons[0].percent == pytest.approx((0.51 - 1.01) / 1.01 * 100)
    assert "lower is better" in render_markdown(lower) and render_json(lower)["higher_is_better"] is False


# ------------------------------------------------------------------------------------------- labels


def test_label_values_are_normalised_so_one_variant_is_one_value():
    assert [canonical(v) for v in (1e-4, "1e-4", "0.0001", "1.0e-4")] == ["0.0001"] * 4
    assert [canonical(v) for v in (2, 2.0, "2", "02", "2.0")] == ["2"] * 5
    assert (canonical(True), canonical("dreamer"), canonical(" v2 "), canonical([1, 2])) == ("true", "dreamer", "v2",
                                                                                               "[1, 2]")


def test_config_keys_may_be_dotted_paths_into_nested_tables():
    config = {"actor": {"optim": {"lr": 1e-6}}, "a.b": 3, "run_name": ""}
    assert config_value(config, "actor.optim.lr") == 1e-6 and config_value(config, "a.b") == 3
    assert config_value(config, "actor.optim.beta") is None and config_value(config, "run_name") is None


def test_path_components_nearest_the_log_win_and_may_join_several_pairs():
    components = path_components("sweep/lr=0.1/lr=0.2,seed=3/metrics.jsonl")
    assert path_pairs(components) == {"lr": "0.2", "seed": "3"}
    assert pattern_values(["cheetah-run-dreamer-seed0"], "{task}-{variant}-seed{seed}") == {
        "task": "cheetah", "variant": "run-dreamer", "seed": "0"}  # each field takes as little as it can
    assert pattern_values(["walker-seed2"], "{task}-{variant}-seed{seed}") == {}
    assert [seed_token([c]) for c in ("walker-seed2", "seed-3", "x_seed_4", "a.s5", "S6")] == ["2", "3", "4", "5", "6"]
    assert [seed_token([c]) for c in ("runs2", "s2x", "gsm8k", "seeds")] == [None] * 4


def test_the_config_outranks_the_path_which_outranks_the_pattern_and_the_seed_token(tmp_path):
    path = str(tmp_path / "variant=from-path" / "math-from-pattern-seed7" / "x_s9")
    rules = {"task_key": "task", "by": "variant", "seed_key": "seed", "pattern": "{task}-{variant}-seed{seed}"}
    task, variant, seed = run_labels(path, {"task": "from-config"}, **rules)
    assert (task.value, task.source) == ("from-config", "config")
    assert (variant.value, variant.source) == ("from-path", "path")
    assert (seed.value, seed.source) == ("7", "pattern")
    task, _, seed = run_labels(str(tmp_path / "variant=v" / "x_s9"), {}, **rules)
    assert (task.value, task.source, seed.value, seed.source) == ("-", "none", "9", "seed token")


# ------------------------------------------------------------------------------------------- statistics


def cell(variant: str, *scores: float) -> Cell:
    return Cell("t", variant, tuple(scores), tuple(str(i) for i in range(len(scores))))


def test_no_p_value_is_invented_where_there_is_nothing_to_test():
    one_run = compare_cells("t", "b", "v", cell("b", 1.0), cell("v", 2.0, 2.1))
    assert (one_run.verdict, math.isnan(one_run.p_value), one_run.difference) == ("n/a", True, pytest.approx(1.05))
    constant_equal = compare_cells("t", "b", "v", cell("b", 1.0, 1.0), cell("v", 1.0, 1.0, 1.0))
    assert (constant_equal.verdict, math.isnan(constant_equal.p_value)) == ("tie", True)
    constant_apart = compare_cells("t", "b", "v", cell("b", 1.0, 1.0), cell("v", 2.0, 2.0))
    assert (constant_apart.verdict, constant_apart.winner, math.isnan(constant_apart.p_value)) == ("n/a", None, True)
    assert "no variance" in constant_apart.reason
    one_side_constant = compare_cells("t", "b", "v", cell("b", 1.0, 1.0, 1.0), cell("v", 2.0, 2.1, 1.9))
    assert one_side_constant.verdict == "variant" and one_side_constant.p_value < ALPHA
    zero_baseline = compare_cells("t", "b", "v", cell("b", -0.1, 0.1), cell("v", 0.2, 0.3))
    assert math.isnan(zero_baseline.percent)
    missing = compare_cells("t", "b", "v", cell("b", 1.0, 2.0), None)
    assert (missing.verdict, missing.reason) == ("n/a", "no run of v on this task")


def test_a_task_without_a_variant_and_a_single_run_cell_are_shown_not_dropped(tmp_path, capsys):
    runs = [write_run(tmp_path, f"{task}-{variant}-seed{seed}", score)
            for task, variant, seed, score in (("walker", "baseline", 0, 1.0), ("walker", "baseline", 1, 1.2),
                                               ("walker", "ours", 0, 2.0), ("hopper", "baseline", 0, 1.0),
                                               ("hopper", "baseline", 1, 1.1))]
    code, out, _ = compare_cli(capsys, *runs, "--format", "json")
    data = json.loads(out)
    by_task = {c["task"]: c for c in data["comparisons"]}
    assert code == 0 and by_task["hopper"]["verdict"] == "n/a" and by_task["hopper"]["n_variant"] == 0
    assert by_task["hopper"]["mean_variant"] is None and by_task["walker"]["verdict"] == "n/a"
    assert by_task["walker"]["std_variant"] is None and by_task["walker"]["p_value"] is None
    code, out, _ = compare_cli(capsys, *runs)
    assert "no runs (n=0)" in out and "n/a: fewer than 2 runs in a cell" in out


def test_names_from_paths_cannot_break_the_markdown_table(tmp_path):
    runs = [write_run(tmp_path, f"variant=a|b,seed={s}", 1.0 + s) for s in range(2)]
    runs += [write_run(tmp_path, f"variant=baseline,seed={s}", 1.0 + s) for s in range(2)]
    out = render_markdown(compare_runs(runs))
    row = next(line for line in out.splitlines() if line.startswith("| - | a"))
    assert row.count(" | ") == 7 and "a\\|b" in row


# ------------------------------------------------------------------------------------------- bad input: exit 2


def one_line_error(capsys, *argv) -> str:
    code, out, err = compare_cli(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("flatline: error: ")
    return err


def test_a_run_without_the_metric_is_named_with_the_metrics_it_has(tmp_path, capsys):
    runs = [write_run(tmp_path, f"baseline-seed{s}", 1.0, config={"variant": "baseline", "seed": s}) for s in range(2)]
    runs += [write_run(tmp_path, f"ours-seed{s}", 2.0, metric="rewards", config={"variant": "ours", "seed": s},
                       plan_reward=1.0) for s in range(2)]
    err = one_line_error(capsys, *runs)
    assert f"{runs[2]}: no metric 'reward' (did you mean 'rewards'" in err and "it logs: rewards, plan_reward" in err
    assert "(1 more run(s) like it)" in err and "--skip-missing" in err
    assert "the variants found" not in err
    code, out, _ = compare_cli(capsys, *runs, "--skip-missing", "--format", "json")
    assert code == 2  # with them left out, one variant remains: nothing to compare
    runs.append(write_run(tmp_path, "ours-seed9", 2.5, config={"variant": "ours", "seed": 9}))
    code, out, _ = compare_cli(capsys, *runs, "--skip-missing", "--format", "json")
    data = json.loads(out)
    assert code == 0 and [entry["path"] for entry in data["left_out"]] == runs[2:4]
    assert data["comparisons"][0]["n_variant"] == 1


def test_a_run_that_diverged_inside_its_window_has_no_score(tmp_path, capsys):
    runs = [write_run(tmp_path, f"{v}-seed{s}", 1.0, config={"variant": v, "seed": s})
            for v in ("baseline", "ours") for s in range(2)]
    diverged = flat(1.0)
    diverged[-1]["reward"] = float("nan")  # JsonlWriter keeps it as "nan"
    write_log(tmp_path / "ours-seed2" / "metrics.jsonl", diverged, {"variant": "ours", "seed": 2})
    runs.append(str(tmp_path / "ours-seed2"))
    err = one_line_error(capsys, *runs)
    assert f"{runs[-1]}: 'reward' is nan at step 10" in err and "a diverged run has no score" in err


def test_a_run_without_a_variant_is_named_with_the_keys_that_differ(tmp_path, capsys):
    runs = [write_run(tmp_path, f"r{lr}-{s}", lr * 1e4, config={"task": "math", "seed": s, "learning_rate": lr})
            for lr in (1e-5, 1e-4) for s in range(2)]
    err = one_line_error(capsys, *runs)
    assert f"no variant for {runs[0]}, {runs[1]}, {runs[2]}, {runs[3]}" in err
    assert "keys whose values differ between these runs: learning_rate" in err and "--by KEY" in err


def test_two_runs_with_the_same_task_variant_and_seed_are_named(tmp_path, capsys):
    runs = [write_run(tmp_path, name, 1.0, config={"task": "math", "variant": v, "seed": 0})
            for name, v in (("a", "baseline"), ("b", "baseline"), ("c", "ours"))]
    err = one_line_error(capsys, *runs)
    assert f"{runs[0]}, {runs[1]} have the same task, variant and seed (task math, variant baseline, seed 0)" in err
    unseeded = [write_run(tmp_path / "no-seed", name, 1.0, config={"variant": v})
                for name, v in (("a", "baseline"), ("b", "baseline"), ("c", "ours"))]
    assert "no seed found" in one_line_error(capsys, *unseeded)


def test_the_baseline_must_be_named_when_no_variant_is_called_baseline(seed_table, capsys):
    _, runs = seed_table
    err = one_line_error(capsys, *runs, "--by", "learning_rate")
    assert "none is named 'baseline'; pass --baseline with one of: 1e-05, 0.0001" in err
    err = one_line_error(capsys, *runs, "--by", "learning_rate", "--baseline", "3e-4")
    assert "--baseline 3e-4: no run has learning_rate 0.0003; the variants found are 1e-05, 0.0001" in err
    err = one_line_error(capsys, *runs, "--by", "task")
    assert "--task-key task, --by task, --seed-key seed" in err
    err = one_line_error(capsys, *runs[:3], "--by", "learning_rate")
    assert "every run has learning_rate 1e-05: nothing to compare" in err


@pytest.mark.parametrize("argv, message", [
    (["--last", "0"], "--last 0: the scoring window needs at least 1 value"),
    (["--pattern", "{task}-{task}"], "--pattern '{task}-{task}': not a pattern"),
    (["--pattern", "no-fields"], "--pattern 'no-fields': not a pattern"),
    (["--pattern", "{task}-{variant"], "not a pattern"),
])
def test_bad_options_are_refused_before_any_run_is_read(tmp_path, capsys, argv, message):
    assert message in one_line_error(capsys, tmp_path / "not-read", *argv)


def test_a_missing_path_or_a_folder_without_runs_is_named(tmp_path, capsys):
    assert "no such run directory or log file" in one_line_error(capsys, tmp_path / "nope")
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    err = one_line_error(capsys, tmp_path / "empty")
    assert f"no run to compare in {tmp_path / 'empty'}" in err and "nothing to read" in err


def test_a_wandb_export_of_two_runs_gives_two_runs():
    export = Path(__file__).parent / "fixtures" / "logs" / "csv" / "wandb_export_2026-11-23T19_15_42.007+00_00.csv"
    result = compare_runs([str(export)], CompareOptions(pattern="grpo-lr{variant}", baseline="1e-6"))
    runs = {r["variant"]: r for r in render_json(result)["runs"]}
    assert set(runs) == {"1e-06", "3e-06"}
    assert runs["1e-06"]["path"] == f"{export}/grpo-lr1e-6" and runs["1e-06"]["score"] == 0.8
