"""Property-based tests (hypothesis) of the input parsers and the configuration loader.

Each reader, given any input, either returns a value that satisfies its documented guarantees
or raises the error type the command line turns into a clear message naming the file
(``ValueError`` for tables and JSON, ``ConfigError`` for the configuration, with the key);
never another exception (which would reach the user as a traceback).
"""

from __future__ import annotations

import copy
import gzip
import json
import re
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketflow.config import AnalysisConfig, ConfigError, load_config
from ketflow.io.bids import read_json
from ketflow.io.confounds import MOTION_6, TISSUE_3, ConfoundStrategy, expansions, load_confounds, strategy_columns
from ketflow.io.integrity import check_nifti
from ketflow.io.tables import read_events
from ketflow.signal.design import validate_events

from conftest import TINY_CONFIG

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["n/a", "", "NaN", "inf", "-inf", "1e400", "fearful", "neutral", " 3", "0x10"]),
    st.text(max_size=8),
)


def tsv_text(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("\t".join(r) for r in [header, *rows]) + "\n"


# -- JSON sidecars ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@SETTINGS
@given(payload=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_read_json_returns_an_object_or_names_the_file(payload, tmp_path):
    path = tmp_path / "sub-01_bold.json"
    path.write_bytes(payload)
    try:
        data = read_json(path)
    except ValueError as err:
        assert str(path) in str(err)
    else:
        assert isinstance(data, dict)


@SETTINGS
@given(data=st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_read_json_reads_back_what_was_written(data, tmp_path):
    path = tmp_path / "sidecar.json"
    path.write_text(json.dumps(data))
    assert read_json(path) == data


# -- events.tsv -------------------------------------------------------------------------------

EVENT_COLUMNS = ["onset", "duration", "trial_type", "modulation", "response_time"]


@SETTINGS
@given(header=st.lists(st.sampled_from(EVENT_COLUMNS) | st.text(max_size=5), min_size=1, max_size=5),
       rows=st.lists(st.lists(cells, min_size=1, max_size=6), max_size=8),
       n_scans=st.integers(1, 50), tr=st.floats(0.3, 4.0))
def test_events_are_valid_or_the_error_is_a_value_error(header, rows, n_scans, tr, tmp_path):
    path = tmp_path / "sub-01_task-faces_events.tsv"
    path.write_text(tsv_text(header, rows))
    try:
        events = validate_events(read_events(str(path)), n_scans, tr)
    except ValueError:
        return
    assert list(events["onset"]) == sorted(events["onset"])
    assert np.isfinite(events[["onset", "duration", "modulation"]].to_numpy()).all()
    assert ((events["onset"] >= 0) & (events["onset"] < n_scans * tr)).all()
    assert (events["duration"] >= 0).all()


@st.composite
def valid_events(draw):
    n_scans, tr = draw(st.integers(5, 100)), draw(st.sampled_from([0.8, 1.0, 2.0, 2.5]))
    n = draw(st.integers(1, 20))
    onsets = draw(st.lists(st.floats(0, n_scans * tr, exclude_max=True), min_size=n, max_size=n))
    durations = draw(st.lists(st.floats(0, 30), min_size=n, max_size=n))
    types = draw(st.lists(st.sampled_from(["fearful", "neutral", "shapes"]), min_size=n, max_size=n))
    frame = pd.DataFrame({"onset": onsets, "duration": durations, "trial_type": types})
    return frame, n_scans, tr


@SETTINGS
@given(case=valid_events(), defect=st.sampled_from(["negative duration", "negative onset", "late onset",
                                                      "non-numeric onset", "missing duration"]),
       data=st.data())
def test_an_event_defect_is_reported_with_its_file_line(case, defect, data, tmp_path):
    frame, n_scans, tr = case
    path = tmp_path / "events.tsv"
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.17g")
    validate_events(read_events(str(path)), n_scans, tr)  # valid as written
    row = data.draw(st.integers(0, len(frame) - 1))
    column, value = {"negative duration": ("duration", -1.5), "negative onset": ("onset", -0.5),
                     "late onset": ("onset", n_scans * tr), "non-numeric onset": ("onset", "soon"),
                     "missing duration": ("duration", None)}[defect]
    broken = frame.astype({column: object})
    broken.loc[row, column] = value
    broken.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.17g")
    with pytest.raises(ValueError, match=rf"line\(s\) {row + 2}[ ,]"):
        validate_events(read_events(str(path)), n_scans, tr)


# -- confounds TSV ------------------------------------------------------------------------------

STRATEGIES = {"24P": ConfoundStrategy("24P"), "36P": ConfoundStrategy("36P"),
              "aCompCor": ConfoundStrategy("aCompCor", n_compcor=0.5), "36P-nofd": ConfoundStrategy("36P", fd_threshold=None)}


def confounds_table(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, dict]:
    """A well-formed fMRIPrep-like confounds table and JSON (first-row n/a where fMRIPrep puts it)."""
    columns = expansions(MOTION_6) + expansions(TISSUE_3)
    table = pd.DataFrame(rng.normal(size=(n, len(columns))), columns=columns)
    for c in columns:
        if "derivative1" in c:
            table.loc[0, c] = np.nan
    table["framewise_displacement"] = np.r_[np.nan, np.abs(rng.normal(0.2, 0.3, n - 1))]
    table["non_steady_state_outlier00"] = np.eye(n)[0]
    components = [f"a_comp_cor_{i:02d}" for i in range(4)]
    for c in components:
        table[c] = rng.normal(size=n)
    table["cosine00"] = np.cos(np.linspace(0, np.pi, n))
    cumulative = np.cumsum([0.3, 0.25, 0.2, 0.1])
    metadata = {c: {"Mask": "combined", "Method": "aCompCor", "CumulativeVarianceExplained": float(v),
                    "Retained": True} for c, v in zip(components, cumulative)}
    return table, metadata


@st.composite
def damaged_confounds(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(2, 30))
    table, metadata = confounds_table(rng, n)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop column", "set cell", "drop row", "garble json"]))
        if action == "drop column" and len(table.columns) > 1:
            table = table.drop(columns=[draw(st.sampled_from(list(table.columns)))])
        elif action == "set cell":
            column = draw(st.sampled_from(list(table.columns)))
            table = table.astype({column: object})
            table.loc[draw(st.integers(0, n - 1)), column] = draw(
                st.sampled_from([np.nan, "abc", np.inf, -np.inf, 1e300, ""]))
        elif action == "drop row" and len(table) > 1:
            table = table.drop(index=table.index[draw(st.integers(0, len(table) - 1))])
        elif action == "garble json":
            key = draw(st.sampled_from(sorted(metadata)))
            metadata[key] = draw(st.sampled_from([None, "combined", {}, {"Mask": 3}, [1, 2],
                                                  {"Mask": "combined", "CumulativeVarianceExplained": "x"}]))
    return table, metadata, n


@SETTINGS
@given(case=damaged_confounds(), strategy=st.sampled_from(sorted(STRATEGIES)))
def test_confounds_load_or_name_the_file(case, strategy, tmp_path):
    table, metadata, n_volumes = case
    tsv = tmp_path / "sub-01_task-rest_desc-confounds_timeseries.tsv"
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    sidecar = tsv.with_suffix(".json")
    sidecar.write_text(json.dumps(metadata))
    try:
        conf = load_confounds(tsv, sidecar, STRATEGIES[strategy], n_volumes)
    except ValueError as err:
        assert str(err).startswith(tsv.name + ":"), str(err)
        return
    values = conf.regressors.to_numpy()
    assert values.shape == (n_volumes, len(strategy_columns(STRATEGIES[strategy], table.columns, metadata)))
    assert np.isfinite(values).all()
    for mask in (conf.keep, conf.dummy, conf.motion_censored):
        assert mask.dtype == bool and mask.shape == (n_volumes,)
    assert np.array_equal(conf.keep, ~(conf.dummy | conf.motion_censored))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 30), strategy=st.sampled_from(sorted(STRATEGIES)),
       data=st.data())
def test_confounds_do_not_depend_on_the_column_order_of_the_tsv(seed, n, strategy, data, tmp_path):
    table, metadata = confounds_table(np.random.default_rng(seed), n)
    order = data.draw(st.permutations(list(table.columns)))
    results = []
    for i, columns in enumerate([list(table.columns), order]):
        tsv = tmp_path / f"{i}_desc-confounds_timeseries.tsv"
        table[columns].to_csv(tsv, sep="\t", index=False, na_rep="n/a", float_format="%.17g")
        sidecar = tsv.with_suffix(".json")
        sidecar.write_text(json.dumps(metadata))
        results.append(load_confounds(tsv, sidecar, STRATEGIES[strategy], n))
    first, second = results
    pd.testing.assert_frame_equal(first.regressors, second.regressors)
    assert np.array_equal(first.keep, second.keep)


# -- gzip integrity --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_nifti(tmp_path_factory) -> tuple[bytes, Path]:
    path = tmp_path_factory.mktemp("nifti") / "bold.nii.gz"
    image = nb.Nifti1Image(np.random.default_rng(0).normal(size=(6, 5, 4, 7)).astype(np.float32), np.eye(4))
    path.write_bytes(gzip.compress(image.to_bytes(), mtime=0))  # 10-byte gzip header, no file name
    return path.read_bytes(), path


@SETTINGS
@given(data=st.data())
def test_any_truncation_is_found_by_the_cheap_check(small_nifti, data, tmp_path):
    payload, original = small_nifti
    cut = data.draw(st.integers(0, len(payload) - 1))
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(payload[:cut])
    assert check_nifti(path, nb.load(original), full=False) is not None


@SETTINGS
@given(data=st.data())
def test_any_corrupted_byte_is_found_by_the_stream_check(small_nifti, data, tmp_path):
    payload, original = small_nifti
    position = data.draw(st.integers(10, len(payload) - 1))  # deflate data and trailer (the header has no CRC)
    flip = data.draw(st.integers(1, 255))
    damaged = bytearray(payload)
    damaged[position] ^= flip
    path = tmp_path / "flipped.nii.gz"
    path.write_bytes(bytes(damaged))
    image = nb.load(original)
    assert check_nifti(path, image, full=True) is not None
    assert check_nifti(original, image, full=True) is None


# -- analysis configuration ---------------------------------------------------------------------

BASE_CONFIG = yaml.safe_load(TINY_CONFIG.read_text())

random_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from(["faces", "rest", "vmPFC", "amygdala_L", "fearful", "36P", "mean"]),
    st.lists(st.sampled_from(["faces", "vmPFC", "fearful", 1, None]), max_size=3),
    st.dictionaries(st.sampled_from(["name", "x", "type", "faces", "seeds"]), st.integers(0, 2), max_size=2),
)


def key_paths(node, prefix=()) -> list[tuple]:
    """Every key path of a nested mapping (list items addressed by index)."""
    paths = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        paths.append(prefix + (key,))
        paths += key_paths(value, prefix + (key,))
    return paths


@st.composite
def mutated_config(draw):
    """The tiny config with 1-3 keys deleted, replaced by a random value, or added (unknown)."""
    config = copy.deepcopy(BASE_CONFIG)
    touched = []
    for _ in range(draw(st.integers(1, 3))):
        paths = key_paths(config)
        path = draw(st.sampled_from(paths))
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(random_values)
        elif isinstance(parent[path[-1]], dict):
            path = path + ("unexpected_key",)
            parent[path[-2]]["unexpected_key"] = draw(random_values)
        touched.append(path)
    return config, touched


def names_a_key(message: str, path: tuple) -> bool:
    """Whether the error message names the key at ``path`` or one of its sections (as a word)."""
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(str(key))}(?![A-Za-z0-9_])", message)
               for key in path if not isinstance(key, int))


@SETTINGS
@given(case=mutated_config(), as_json=st.booleans())
def test_config_loads_or_names_the_file_and_key(case, as_json, tmp_path):
    config, touched = case
    path = tmp_path / ("config.json" if as_json else "config.yml")
    path.write_text(json.dumps(config) if as_json else yaml.safe_dump(config))
    try:
        loaded = load_config(path)
    except ConfigError as err:
        message = str(err)
        assert message.startswith(str(path)), message
        message = message[len(str(path)):]
        assert any(names_a_key(message, p) for p in touched), (touched, message)
    else:
        assert isinstance(loaded, AnalysisConfig)


@SETTINGS
@given(text=st.text(max_size=300))
def test_config_from_any_text_loads_or_names_the_file(text, tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as err:
        assert str(err).startswith(str(path))
