"""The cases plugin: one short instrumented training run per task (cached for the session), a verdict per case,
and at the end a report per run (reports/<run>/diagnosis.md + .json) and a log book entry.

    pytest cases/                                   # the embedded CPU configuration (SmolLM2, MuSiQue + control)
    pytest cases/ -k "masking and musique"
    pytest cases/ --flatline-config my.toml         # your model, data and plug-ins; control derived from it
    pytest cases/ --flatline-config my.toml --flatline-control control.toml

A confirmed hypothesis fails its case (evidence and prescription in the message), a ruled-out one passes,
inconclusive and skipped verdicts show as skipped with the reason. The plug-in cases (cases/test_plugins.py) train
nothing: they property-test the config's advantage_fn, mask_fn and loss_fn, and their verdicts join the subject
(musique) run's report, or a report of their own when the session trained no subject run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

FAMILIES = ("advantage", "reward", "masking", "gradients", "update", "sync", "length", "kl", "entropy", "episodes", "progress",
            "control")
VERDICT_PROPERTY = "flatline_verdict"


def pytest_addoption(parser):
    group = parser.getgroup("flatline")
    group.addoption("--flatline-config", default=None,
                    help="your TOML config: the run under diagnosis (default: the embedded CPU configuration)")
    group.addoption("--flatline-control", default=None,
                    help="the control's config (default: your config on the GSM8K-format control task)")
    group.addoption("--flatline-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key of both runs, e.g. --flatline-set max_steps=8")


def pytest_configure(config):
    registered = "\n".join(config.getini("markers"))
    for marker in (*FAMILIES, "musique", "gsm8k"):
        if f"{marker}:" not in registered:  # run from outside this repo's pyproject
            config.addinivalue_line("markers", f"{marker}: flatline cases")
    config.pluginmanager.register(VerdictCollector(), "flatline-verdicts")


def session_config(opts, task: str):
    """The Config this session trains (or checks plug-ins of) for `task`, from the --flatline-* options."""
    from flatline.harness.case_runs import case_config

    return case_config(task, opts.getoption("--flatline-config"), opts.getoption("--flatline-control"),
                       opts.getoption("--flatline-set"))


def pytest_sessionstart(session):
    """Refuse a bad --flatline-config (or control, or --flatline-set) once, before any case or training runs."""
    from flatline.common.errors import FlatlineError
    from flatline.harness.case_runs import TASKS

    opts = session.config
    for task in TASKS:
        try:
            session_config(opts, task)
        except FlatlineError as exc:
            raise pytest.UsageError(f"flatline: {exc}") from None


class CaseSession:
    """Trains each task's run on first use and keeps its History for the rest of the session."""

    def __init__(self, config):
        self.options = config
        self.histories = {}
        self.failures = {}

    def history(self, task: str):
        if task in self.failures:
            pytest.fail(f"flatline could not train the {task} run: {self.failures[task]}", pytrace=False)
        if task not in self.histories:
            self.histories[task] = self._train(task)
        return self.histories[task]

    def _train(self, task: str):
        from flatline.common.errors import FlatlineError
        from flatline.diagnostics.conclude import wandb_summary
        from flatline.diagnostics.history import load_history
        from flatline.diagnostics.judge import judge
        from flatline.harness.case_runs import train_case

        opts = self.options
        try:
            cfg = session_config(opts, task)

            def send_full_judgement_to_wandb(run_dir, tracker):
                tracker.summarize(*wandb_summary(judge(load_history(run_dir))))

            run_dir = train_case(cfg, on_finish=send_full_judgement_to_wandb, log=lambda *_: None)
        except FlatlineError as exc:  # a bad user config: every case of this task reports it, none crashes
            self.failures[task] = str(exc)
            pytest.fail(f"flatline could not train the {task} run: {exc}", pytrace=False)
        history = load_history(run_dir)
        history.config.setdefault("log_book", cfg.log_book)
        history.config.setdefault("report_dir", cfg.report_dir)
        return history

    def verdict(self, hypothesis_id: str, task: str):
        from flatline.diagnostics.judge import judge_one

        history = self.history(task)
        if hypothesis_id == "control.learns" and task != "gsm8k":
            history.control = self.history("gsm8k")
        return history, judge_one(hypothesis_id, history)


@pytest.fixture(scope="session")
def flatline_session(pytestconfig):
    return CaseSession(pytestconfig)


@pytest.fixture(params=["musique", "gsm8k"])
def task(request):
    request.applymarker(getattr(pytest.mark, request.param))
    return request.param


@pytest.fixture
def judge_case(request, flatline_session, task):
    """judge_case("advantage.degenerate_groups"): judge one hypothesis on this task's run and turn the verdict
    into the case's outcome."""

    def check(hypothesis_id: str) -> None:
        history, verdict = flatline_session.verdict(hypothesis_id, task)
        record = {"run": history.run, "run_dir": str(history.run_dir), "task": task,
                  "log_book": history.setting("log_book", ""), "report_dir": history.setting("report_dir", "reports"),
                  "control_run": history.control.run if history.control is not None else None,
                  "verdict": verdict.to_json()}
        request.node.user_properties.append((VERDICT_PROPERTY, json.dumps(record)))
        if verdict.status in ("fail", "warn"):  # warn: learning now, but the pathology is there and will stop it
            pytest.fail(verdict.message(), pytrace=False)
        if verdict.status in ("inconclusive", "skipped"):
            pytest.skip(f"{verdict.status}: {verdict.reason}")

    return check


@pytest.fixture
def judge_plugin(request):
    """judge_plugin("advantage_fn"): Hypothesis property tests of the session config's plug-in (flatline's default
    when it names none), no model trained; a violated property fails the case with its minimal counterexample."""

    def check(plug_point: str) -> None:
        from flatline.common.errors import FlatlineError
        from flatline.harness.properties import judge_plugin as judge

        opts = request.config
        try:
            cfg = session_config(opts, "musique")
            verdict, failure = judge(plug_point, cfg)
        except FlatlineError as exc:
            pytest.fail(f"flatline could not load the {plug_point} plug-in: {exc}", pytrace=False)
        record = {"run": None, "report_dir": cfg.report_dir, "verdict": verdict.to_json()}
        request.node.user_properties.append((VERDICT_PROPERTY, json.dumps(record)))
        if verdict.status == "fail":
            pytest.fail(failure, pytrace=False)

    return check


class VerdictCollector:
    """Collects the verdicts from test reports (so they also arrive from xdist workers) and, at the end of the
    session, writes one report and one log book entry per run."""

    def __init__(self):
        self.runs: dict[str, dict] = {}
        self.runless: list[dict] = []  # verdicts judged without a run (the plug-in cases)
        self.reports: list[tuple[str, str, str]] = []

    def pytest_runtest_logreport(self, report):
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == VERDICT_PROPERTY:
                record = json.loads(value)
                if record["run"] is None:
                    self.runless.append(record)
                    continue
                run = self.runs.setdefault(record["run"], {k: record[k] for k in
                                                           ("run_dir", "task", "log_book", "report_dir", "control_run")})
                run.setdefault("verdicts", []).append(record["verdict"])
                run["control_run"] = run["control_run"] or record["control_run"]  # set by control.learns only

    def pytest_sessionfinish(self, session):
        if hasattr(session.config, "workerinput"):
            return  # an xdist worker: the controller writes the reports
        subject = next((run for run in self.runs.values() if run["task"] == "musique"), None)
        if subject is not None:
            subject["verdicts"] += [record["verdict"] for record in self.runless]
        self.reports = [write_run_report(name, run) for name, run in self.runs.items()]
        if self.runless and subject is None:
            self.reports.append(write_runless_report(self.runless))

    def pytest_terminal_summary(self, terminalreporter):
        if not self.reports:
            return
        terminalreporter.section("flatline diagnosis")
        for name, report, headline in self.reports:
            terminalreporter.write_line(f"{name}: {headline}")
            terminalreporter.write_line(f"  report: {report}")


def write_run_report(name: str, run: dict) -> tuple[str, str, str]:
    """The collected verdicts of one run as reports/<run>/diagnosis.md (+ .json, plots), a copy in the run
    directory, and a log book entry."""
    from flatline.diagnostics.conclude import conclude
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import Diagnosis, key_metrics
    from flatline.common.rundir import create_run_dir

    history = load_history(run["run_dir"])
    verdicts = _verdicts(run["verdicts"])
    diagnosis = Diagnosis(name, verdicts, key_metrics(history), run["control_run"])
    report_dir = create_run_dir(Path(run["report_dir"]) / name)
    report = conclude(history, diagnosis, report_dirs=[report_dir, Path(run["run_dir"])], log_book=run["log_book"],
                      log=lambda *_: None)
    return name, str(report), diagnosis.headline()


def write_runless_report(records: list[dict]) -> tuple[str, str, str]:
    """Verdicts judged without a run, when the session trained no subject run to join: their own
    reports/plugins-<time>/diagnosis.md (+ .json) over a history of zero steps; no curves, and no log book entry
    (the log book has one entry per judged run)."""
    from datetime import datetime

    from flatline.diagnostics.history import History
    from flatline.diagnostics.judge import Diagnosis, key_metrics
    from flatline.diagnostics.report import write_report
    from flatline.common.rundir import create_run_dir

    name = f"plugins-{datetime.now():%Y%m%d-%H%M%S}"
    history = History(run=name, rows=[])
    diagnosis = Diagnosis(name, _verdicts([record["verdict"] for record in records]), key_metrics(history))
    report_dir = create_run_dir(Path(records[0]["report_dir"]) / name)
    return name, str(write_report(diagnosis, history, report_dir)), diagnosis.headline()


def _verdicts(records: list[dict]) -> list:
    """Verdicts from their JSON records, likeliest cause first."""
    from flatline.diagnostics.judge import cause_rank
    from flatline.diagnostics.verdict import Verdict

    fields = ("id", "title", "status", "evidence", "prescription", "references", "reason")
    return sorted((Verdict(**{k: v[k] for k in fields}) for v in records), key=cause_rank)
