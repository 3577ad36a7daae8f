"""Issue 26: never harm what the user points at, never hang on their code, never call their mistake our bug.

Each defect: the exit code, the one line on stderr, and that what the user pointed at is unchanged (bytes, mode,
file type). Real `flatline` commands (in-process through main(), or a subprocess where a pipe or a hang is the point);
training runs are the bandit config on the tiny random model."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from flatline.common.errors import FlatlineError, PluginExit, PluginTimeout
from flatline.diagnostics.history import History
from flatline.diagnostics.logbook import MARKER, RunState, file_entry, log_book_path, render_entry
from flatline.harness.cli import EXIT_INTERRUPTED, EXIT_USAGE, describe_internal_error, main
from flatline.trainer.plugins import PLUG_POINTS, guarded

REPO = Path(__file__).resolve().parents[1]
BANDIT = str(REPO / "configs" / "bandit.toml")
FAST = ["--set", "progress_bar=false", "--set", "eval_every=0"]


def snapshot(path: Path) -> tuple:
    """What must not change: file type, mode, device number, and the bytes of a regular file."""
    info = os.lstat(path)
    data = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
    return stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_rdev, data


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flatline: error: "), err
    return err.strip()


def write_log(path: Path, steps: int = 12) -> Path:
    path.write_text("".join(json.dumps({"step": s, "reward": 0.05 * s, "grad_norm": 0.5, "loss": 0.1}) + "\n"
                            for s in range(1, steps + 1)))
    return path


def a_log_book(path: Path) -> Path:
    path.write_text(f"# My experiments\n\n{MARKER}\n")
    file_entry(path, "/elsewhere/old", render_entry(None, History(run="old", rows=[], config={}),
                                                    when=datetime(2025, 1, 3), state=RunState("completed", 4, 4),
                                                    run="/elsewhere/old"))
    return path


def make_char_device(path: Path) -> Path:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a copy of /dev/null
    except (PermissionError, OSError) as exc:
        pytest.skip(f"mknod: {exc}")
    return path


# ------------------------------------------------------------------ never harm what the user points at


def random_bytes(path: Path) -> Path:
    path.write_bytes(bytes((i * 7919 + 13) % 256 for i in range(3000)))
    return path


def metrics_jsonl(path: Path) -> Path:
    return write_log(path)


def read_only_book(path: Path) -> Path:
    a_log_book(path).chmod(0o444)
    return path


@pytest.mark.parametrize("make, why", [
    (make_char_device, "is a character device, not a log book file"),
    (random_bytes, "is neither empty nor a log book"),
    (metrics_jsonl, "is neither empty nor a log book"),
    (read_only_book, "is write-protected (mode 444)"),
])
def test_train_refuses_a_log_book_it_must_not_write_and_leaves_it_untouched(tmp_path, monkeypatch, capsys, make, why):
    book = make(tmp_path / "book")
    before, locked_before = snapshot(book), Path(f"{book}.lock").exists()
    monkeypatch.setenv("FLATLINE_LOG", str(book))
    assert main(["train", BANDIT, "--out", str(tmp_path / "run"), *FAST]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert f"log book {book} {why}" in line and "set it to off" in line
    assert snapshot(book) == before
    assert not (tmp_path / "run").exists() and Path(f"{book}.lock").exists() == locked_before


def test_diagnose_log_refuses_such_a_log_book_before_writing_anything(tmp_path, monkeypatch, capsys):
    book, out = random_bytes(tmp_path / "book.png"), tmp_path / "report"
    before = snapshot(book)
    monkeypatch.setenv("FLATLINE_LOG", str(book))
    assert main(["diagnose", str(write_log(tmp_path / "metrics.jsonl")), "--log", "--out", str(out)]) == EXIT_USAGE
    assert one_error_line(capsys).startswith(f"flatline: error: log book {book} is neither empty nor a log book")
    assert snapshot(book) == before and not out.exists()


def test_a_fifo_as_log_book_is_refused_at_once_never_opened(tmp_path):
    fifo = tmp_path / "book"
    os.mkfifo(fifo)
    before = snapshot(fifo)
    done = subprocess.run([sys.executable, "-m", "flatline.harness.cli", "train", BANDIT, "--out",
                           str(tmp_path / "run"), *FAST], cwd=tmp_path, env={**os.environ, "FLATLINE_LOG": str(fifo)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip().splitlines() == [f"flatline: error: log book {fifo} is a FIFO (named pipe), not a log "
                                                f"book file; point log_book / $FLATLINE_LOG at a markdown file, or "
                                                f"set it to off for no log book"]
    assert snapshot(fifo) == before and not (tmp_path / "run").exists()


def test_writing_entries_refuses_the_same_paths_when_called_directly(tmp_path):
    device, ro = make_char_device(tmp_path / "null"), read_only_book(tmp_path / "ro.md")
    for path in (device, ro, random_bytes(tmp_path / "png")):
        before = snapshot(path)
        with pytest.raises(FlatlineError, match=f"log book {path} "):
            file_entry(path, "/some/run", render_entry(None, History(run="r", rows=[], config={}),
                                                       when=datetime(2025, 1, 1), run="/some/run"))
        assert snapshot(path) == before


@pytest.mark.parametrize("value", ["off", "OFF", "/dev/null"])
def test_the_off_switch_and_dev_null_write_no_log_book(tmp_path, monkeypatch, capsys, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLATLINE_LOG", value)
    null_before = snapshot(Path("/dev/null"))
    assert log_book_path() is None and log_book_path(value) is None
    log = write_log(tmp_path / "metrics.jsonl")
    assert main(["diagnose", str(log), "--log"]) in (0, 1)
    assert "log book:" not in capsys.readouterr().err
    assert not (tmp_path / "reports").exists() and not Path("off").exists()
    assert snapshot(Path("/dev/null")) == null_before
    assert main(["log"]) == EXIT_USAGE
    assert "the log book is switched off" in one_error_line(capsys)


def test_a_hand_started_markdown_log_book_is_still_accepted(tmp_path, monkeypatch, capsys):
    book = tmp_path / "notes.md"
    book.write_text("# My runs\n\n2025-01-02: lr 1e-5 did nothing\n")
    monkeypatch.setenv("FLATLINE_LOG", str(book))
    assert main(["diagnose", str(write_log(tmp_path / "metrics.jsonl")), "--log"]) in (0, 1)
    text = book.read_text()
    assert text.startswith("# My runs\n") and text.endswith("2025-01-02: lr 1e-5 did nothing\n") and MARKER in text


def test_diagnose_out_into_a_folder_with_files_overwrites_nothing(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "reward.png").write_bytes(b"\x89PNG my own plot")
    before = snapshot(out / "reward.png")
    assert main(["diagnose", str(write_log(tmp_path / "metrics.jsonl")), "--out", str(out)]) == EXIT_USAGE
    assert one_error_line(capsys) == (f"flatline: error: --out {out}: already holds files (reward.png), which would "
                                      f"be overwritten; choose a new folder (or an empty one), e.g. runs/NAME")
    assert snapshot(out / "reward.png") == before and sorted(os.listdir(out)) == ["reward.png"]


def test_diagnose_out_into_an_empty_folder_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    assert main(["diagnose", str(write_log(tmp_path / "metrics.jsonl")), "--out", str(out)]) in (0, 1)
    assert (out / "diagnosis.md").is_file()


# ------------------------------------------------------------------ never call the user's mistake our bug


@pytest.mark.parametrize("where, why", [
    (lambda tmp: tmp / "a_file" / "run", "is under {tmp}/a_file, which is a file, not a folder"),
    (lambda tmp: Path("/proc/flatline-run"), "is inside /proc, a system folder no run can be written to"),
    (lambda tmp: Path("/"), "is the root folder"),
])
@pytest.mark.parametrize("command", ["train", "diagnose"])
def test_out_at_an_impossible_place_is_one_line_exit_2(tmp_path, capsys, where, why, command):
    (tmp_path / "a_file").write_text("mine\n")
    before = snapshot(tmp_path / "a_file")
    out = where(tmp_path)
    argv = ["train", BANDIT, *FAST] if command == "train" else ["diagnose", str(write_log(tmp_path / "m.jsonl"))]
    assert main([*argv, "--out", str(out)]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert line.startswith(f"flatline: error: --out {out}: {why.format(tmp=tmp_path)}; choose a new folder")
    assert snapshot(tmp_path / "a_file") == before


def test_a_config_of_random_bytes_is_one_line_exit_2(tmp_path, capsys):
    config = random_bytes(tmp_path / "config.toml")
    before = snapshot(config)
    for command in ("train", "preflight"):
        assert main([command, str(config)]) == EXIT_USAGE
        line = one_error_line(capsys)
        assert line.startswith(f"flatline: error: config file {config}: not UTF-8 text (byte 0x")
        assert line.endswith("a config is a TOML text file such as configs/default.toml")
    assert snapshot(config) == before


@pytest.mark.parametrize("command", ["log", "compare"])
def test_a_reader_that_closes_the_pipe_early_is_no_error(tmp_path, command):
    book = a_log_book(tmp_path / "book.md")
    book.write_text(book.read_text() + "".join(f"note {i}: " + "x" * 200 + "\n" for i in range(5000)))  # ~1 MB
    runs = []
    for variant, score in (("baseline", 0.2), ("lower_lr", 0.3)):
        run = tmp_path / "runs" / f"arith-{variant}-seed1"
        run.mkdir(parents=True)
        write_log(run / "metrics.jsonl")
        (run / "config.toml").write_text(f'task = "arith"\nvariant = "{variant}"\nseed = 1\n')
        runs.append(str(run))
    argv = ["log", "--log-book", str(book)] if command == "log" else ["compare", *runs, "--format", "json"]
    process = subprocess.Popen([sys.executable, "-m", "flatline.harness.cli", *argv], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.read(1)
    process.stdout.close()  # `| head -c 1`
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0 and err == ""


def test_flatlines_own_trainer_probes_and_diagnostics_folders_are_never_taken_for_user_code(tmp_path):
    from flatline.diagnostics import judge
    from flatline.harness.cli import _is_user_code
    from flatline.probes import reward
    from flatline.trainer.samplers import hf

    assert not any(_is_user_code(module.__file__) for module in (judge, reward, hf))
    assert _is_user_code(str(tmp_path / "my_rewards.py"))


# ------------------------------------------------------------------ never hang on the user's code

PLUGINS = '''
import sys
import time


def hanging_reward(prompts, completions, **kwargs):
    time.sleep(3600)


def exiting_reward(prompts, completions, **kwargs):
    sys.exit(0)


def huge_reward(prompts, completions, **kwargs):
    return [1e300 if i % 3 == 0 else float(i % 2) for i in range(len(completions))]


def inf_reward(prompts, completions, **kwargs):
    return [float("inf") if i == 0 else float(i % 2) for i in range(len(completions))]
'''


@pytest.fixture
def plugins_dir(tmp_path, monkeypatch):
    (tmp_path / "user_plugins.py").write_text(PLUGINS)
    sys.modules.pop("user_plugins", None)  # another test's user_plugins, imported earlier in this process
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLATLINE_LOG", str(tmp_path / "LOG.md"))
    yield tmp_path
    sys.modules.pop("user_plugins", None)


@pytest.mark.parametrize("command", ["preflight", "train"])  # train runs preflight before any weights load
def test_preflight_refuses_a_reward_that_hangs_naming_it_and_the_call(plugins_dir, capsys, command):
    started = time.monotonic()
    assert main([command, BANDIT, "--set", "reward=user_plugins:hanging_reward", "--set", "plugin_timeout_s=0.5",
                 "--out" if command == "train" else "--format", "run" if command == "train" else "text"]) == EXIT_USAGE
    assert time.monotonic() - started < 60 and not (plugins_dir / "run").exists()
    assert one_error_line(capsys) == (
        "flatline: error: reward user_plugins:hanging_reward did not return within plugin_timeout_s = 0.5 s (called "
        "as fn(prompts, completions, **columns) -> list[float | None] or dict[str, list]); a hang (a lock, a network "
        "call without a timeout, an endless loop) or a slow plug-in: fix it, or raise plugin_timeout_s")


def test_preflight_names_a_reward_that_calls_sys_exit(plugins_dir, capsys):
    assert main(["preflight", BANDIT, "--set", "reward=user_plugins:exiting_reward"]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert line.startswith("flatline: error: reward user_plugins:exiting_reward called sys.exit(0) (raised SystemExit)")


@pytest.mark.parametrize("reward, message", [
    ("hanging_reward", "did not return within plugin_timeout_s = 0.5 s"),
    ("exiting_reward", "called sys.exit(0) (raised SystemExit)"),
])
def test_train_fails_the_run_naming_the_plugin_and_settles_it(plugins_dir, capsys, reward, message):
    run = plugins_dir / "run"
    assert main(["train", BANDIT, "--no-preflight", "--set", f"reward=user_plugins:{reward}", "--set",
                 "plugin_timeout_s=0.5", "--set", "max_steps=3", *FAST, "--out", str(run)]) == EXIT_USAGE
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"flatline: error: reward user_plugins:{reward} {message}")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["steps_completed"]) == ("failed", 0)
    assert summary["error"].startswith(f"Plugin{'Timeout' if 'hanging' in reward else 'Exit'}: reward user_plugins:")
    book = (plugins_dir / "LOG.md").read_text()
    assert "- status: **FAILED** (during step 1 of 3: Plugin" in book


@pytest.mark.parametrize("key", sorted(PLUG_POINTS))
def test_every_plug_point_times_out_and_catches_sys_exit(key):
    def hang(*args, **kwargs):
        time.sleep(3600)

    def leave(*args, **kwargs):
        sys.exit(3)

    started = time.monotonic()
    with pytest.raises(PluginTimeout, match=f"^{key} .*hang did not return within plugin_timeout_s = 0.2 s"):
        guarded(key, hang, 0.2)(1, 2)
    assert time.monotonic() - started < 5
    for timeout in (0.2, 0):
        with pytest.raises(PluginExit, match=rf"^{key} .*leave called sys.exit\(3\)"):
            guarded(key, leave, timeout)(1, 2)


def test_the_boundary_keeps_the_users_exception_name_and_signature():
    def advantages(rewards, num_generations, *, scale_rewards, eps):
        raise ValueError("mine")

    wrapped = guarded("advantage_fn", advantages, 5)
    import inspect

    assert inspect.signature(wrapped) == inspect.signature(advantages) and wrapped.__name__ == "advantages"
    with pytest.raises(ValueError, match="mine") as caught:
        wrapped(1, 2, scale_rewards="group", eps=0)
    assert describe_internal_error(caught.value).startswith("error in your code at test_never_harm.py:")


def test_a_grader_that_calls_sys_exit_ends_the_run_named(tmp_path):
    from types import SimpleNamespace

    from flatline.trainer.episodes.runner import Episode, grade_all
    from flatline.trainer.tasks.base import Example

    def grader(prompts, completions, **kwargs):
        sys.exit(0)

    host = SimpleNamespace(reward=guarded("reward", grader, 5), cfg=SimpleNamespace(grader_timeout_s=5),
                           prompt_text=lambda example: "")
    episode = Episode(Example("e1", [{"role": "user", "content": "q"}]), 0, [1], [], outcome="finished", answer="a")
    with pytest.raises(PluginExit, match="reward .*grader called sys.exit"):
        grade_all(host, [episode])


@pytest.mark.parametrize("reward", ["huge_reward", "inf_reward"])
def test_non_finite_rewards_warn_once_and_the_run_goes_on_to_its_diagnosis(plugins_dir, capsys, reward):
    run = plugins_dir / "run"
    with pytest.warns(UserWarning) as caught:
        code = main(["train", BANDIT, "--no-preflight", "--set", f"reward=user_plugins:{reward}",
                     "--set", "max_steps=4", *FAST, "--out", str(run)])
    assert code == 0
    mine = [str(w.message) for w in caught if "non-finite" in str(w.message) or "NaN or inf" in str(w.message)]
    assert len(mine) == 1 and mine[0].startswith(f"reward user_plugins:{reward} returned ")
    assert "beyond float32's range" in mine[0]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["steps_completed"]) == ("completed", 4)
    assert "FAIL advantage.numerics" in capsys.readouterr().out


# ------------------------------------------------------------------ SIGHUP settles a run as SIGTERM does


def test_sighup_settles_the_run_interrupted(tmp_path):
    book, run = a_log_book(tmp_path / "LOG.md"), tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "flatline.harness.cli", "train", BANDIT, "--set", "max_steps=1000", *FAST,
         "--no-preflight", "--out", str(run)], cwd=REPO, env={**os.environ, "FLATLINE_LOG": str(book)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 1):
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGHUP)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == EXIT_INTERRUPTED and err.strip().endswith("flatline: interrupted")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["error"]) == ("interrupted", "SIGHUP")
    assert "- status: **INTERRUPTED** (by SIGHUP after" in book.read_text()
