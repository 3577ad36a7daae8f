"""Whatever the user gives, flatline answers with a reading or a one-line LogError / ConfigError (exit 2): never an
internal error (exit 3), never a traceback. Hypothesis feeds arbitrary bytes and arbitrary JSON values to every
reader (read_log with each --format-in value in FORMATS, auto included, so a reader added there is fuzzed too), to
`flatline diagnose`, and to the config loader."""
import json
import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flatline.common.errors import ConfigError, FlatlineError
from flatline.diagnostics.readers import read_log
from flatline.diagnostics.readers.detect import FORMATS
from flatline.harness.cli import EXIT_INTERNAL, main
from flatline.trainer.config import FIELD_NAMES, build_config, load_config

# The file names a log goes by, so auto-detection reaches each reader by name as well as by content.
NAMES = ("log.jsonl", "trainer_state.json", "metrics.jsonl", "history.csv", "table.tsv", "console.log",
         "events.out.tfevents.1700000000.host", "run-abc.wandb")
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)
# Rows a metrics logger might write: known-looking keys, any JSON values.
row_keys = st.sampled_from(["step", "reward", "loss", "grad_norm", "kl", "entropy", "_step", "global_step", "data",
                            "time", "train/reward", "log_history", "epoch", "critic/score/mean"]) | st.text(max_size=8)
rows = st.dictionaries(row_keys, json_values, max_size=6)


def dumps(value) -> str:
    """JSON text of `value` (NaN and Infinity as Python writes them: trainers do too)."""
    return json.dumps(value, allow_nan=True)


def expect_reading_or_log_error(path, fmt) -> None:
    try:
        read_log(path, fmt)
    except FlatlineError as exc:  # LogError, or a config error of the log's own config file
        assert str(exc) and "\n" not in str(exc).strip(), str(exc)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_are_read_or_refused_with_a_log_error(tmp_path, fmt, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    expect_reading_or_log_error(path, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(value=json_values)
def test_an_arbitrary_json_value_is_read_or_refused_with_a_log_error(tmp_path, fmt, value):
    for name in ("trainer_state.json", "log.jsonl"):
        path = tmp_path / name
        path.write_text(dumps(value))
        expect_reading_or_log_error(path, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(lines=st.lists(rows | json_values, min_size=1, max_size=12))
def test_json_lines_of_arbitrary_rows_are_read_or_refused_with_a_log_error(tmp_path, fmt, lines):
    for name in ("log.jsonl", "metrics.jsonl"):
        path = tmp_path / name
        path.write_text("".join(dumps(line) + "\n" for line in lines))
        expect_reading_or_log_error(path, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(content=st.binary(max_size=512) | st.lists(rows, min_size=1, max_size=8).map(
    lambda lines: "".join(dumps(line) + "\n" for line in lines).encode()))
def test_diagnose_never_exits_3_or_prints_a_traceback(tmp_path, capsys, fmt, content):
    path = tmp_path / "log.jsonl"
    path.write_bytes(content)
    capsys.readouterr()
    code = main(["diagnose", str(path), "--format-in", fmt, "--format", "json"])
    err = capsys.readouterr().err
    assert code != EXIT_INTERNAL and "Traceback" not in err, err
    if code == 2:
        assert err.startswith("flatline: error: ") and err.count("\n") == 1, err


@FUZZ
@given(data=st.binary(max_size=2048))
def test_a_config_file_of_arbitrary_bytes_loads_or_is_a_config_error(tmp_path, data):
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"config file {path}") or "config key" in str(exc) or "unknown" in str(exc), exc


toml_text = st.lists(st.tuples(st.sampled_from(FIELD_NAMES), st.sampled_from(
    ["1", "-1", "0", "1e300", "nan", "inf", "-inf", '"x"', '""', "true", "[]", "[1, 2]", "{}", "{a = 1}",
     "1979-05-27", "0x10", '"\\u0000"', "3.5"])), max_size=6).map(
    lambda pairs: "".join(f"{key} = {value}\n" for key, value in dict(pairs).items()))


@FUZZ
@given(text=toml_text)
def test_a_toml_config_of_odd_values_loads_or_is_a_config_error(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)


@FUZZ
@given(values=st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(string.ascii_lowercase, max_size=12),
                              json_values, max_size=6))
def test_arbitrary_json_values_for_config_keys_build_or_are_a_config_error(values):
    try:
        cfg = build_config(values)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for key, value in values.items():  # what was accepted is what runs
        if isinstance(value, float) and not isinstance(getattr(cfg, key), str):
            assert math.isfinite(value)
