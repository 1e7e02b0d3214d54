"""Calibration sets: seeded, stratified, content-hashed, read through THE preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecrack.calibration import DEFAULT_CALIBRATION, build_calibration_set, load_calibration
from edgecrack.cli import app
from edgecrack.errors import DatasetError
from edgecrack.preprocess import InputContract, preprocess_files

REPO = Path(__file__).resolve().parents[1]


def test_build_is_seeded_and_stratified(tmp_path, deck_dir):
    a = build_calibration_set(tmp_path / "a", deck_dir, n=16, seed=3)
    b = build_calibration_set(tmp_path / "b", deck_dir, n=16, seed=3)
    c = build_calibration_set(tmp_path / "c", deck_dir, n=16, seed=4)
    assert a.counts() == {"CD": 8, "UD": 8}
    assert a.hash == b.hash and a.hash != c.hash
    meta = json.loads((tmp_path / "a" / "calibration.json").read_text())
    assert meta["n"] == 16 and meta["seed"] == 3 and meta["hash"] == a.hash


def test_batches_are_the_inference_preprocessing(tmp_path, deck_dir):
    s = build_calibration_set(tmp_path / "cal", deck_dir, n=10, seed=0)
    c = InputContract(224, 224)
    batches = list(s.batches(c, 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert all(b.dtype == np.uint8 and b.shape[1:] == (224, 224, 3) for b in batches)
    assert np.array_equal(np.concatenate(batches), preprocess_files(s.paths, c))
    assert [len(b) for b in s.batches(c, 4, drop_last=True)] == [4, 4]


def test_changed_image_is_detected(tmp_path, deck_dir):
    s = build_calibration_set(tmp_path / "cal", deck_dir, n=6, seed=0)
    s.paths[0].write_bytes(s.paths[1].read_bytes())
    with pytest.raises(DatasetError, match="changed since the set was built"):
        load_calibration(tmp_path / "cal")


def test_missing_and_empty_sets_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="calibration set not found"):
        load_calibration(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_calibration(tmp_path / "empty")
    with pytest.raises(DatasetError, match="fewer than the 9999"):
        build_calibration_set(tmp_path / "x", n=9999)


def test_plain_image_folder_works_and_hashes_by_content(tmp_path, small_deck):
    s = load_calibration(small_deck)
    assert len(s) == 40 and s.counts() == {"CD": 20, "UD": 20}
    assert load_calibration(small_deck).hash == s.hash


def test_committed_default_set_matches_its_description():
    s = load_calibration(REPO / DEFAULT_CALIBRATION)
    meta = json.loads((REPO / DEFAULT_CALIBRATION / "calibration.json").read_text())
    assert s.hash == meta["hash"] and len(s) == 64 and s.counts() == {"CD": 32, "UD": 32}


def test_cli_builds_a_set(tmp_path, deck_dir):
    r = CliRunner().invoke(app, ["calibration", "build", "--out", str(tmp_path / "cal"), "--n", "8"])
    assert r.exit_code == 0, r.output
    assert load_calibration(tmp_path / "cal").counts() == {"CD": 4, "UD": 4}


# -- calibration.json is data: every read and delete stays inside the calibration folder ---------


def _listing(cal: Path, entries: list[str]) -> None:
    """Rewrite calibration.json so that it lists ``entries`` (with their real sha1 where they exist)."""
    from edgecrack.data import content_hash

    meta = json.loads((cal / "calibration.json").read_text())
    meta["files"] = [{"file": e, "label": "CD", "sha1": content_hash(cal / e) if (cal / e).is_file() else "0" * 40}
                     for e in entries]
    (cal / "calibration.json").write_text(json.dumps(meta))


@pytest.fixture
def victim(tmp_path, deck_dir) -> Path:
    """A real image outside the calibration folder that must survive and never be read."""
    v = tmp_path / "outside" / "victim.jpg"
    v.parent.mkdir()
    v.write_bytes(sorted((deck_dir / "CD").glob("*.jpg"))[-1].read_bytes())
    return v


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlinked-folder"])
def test_build_never_deletes_outside_the_calibration_folder(tmp_path, deck_dir, victim, how):
    cal = tmp_path / "cal"
    s = build_calibration_set(cal, deck_dir, n=4, seed=0)
    mine = s.paths[0].relative_to(cal).as_posix()
    if how == "dotdot":
        entry = "../outside/victim.jpg"
    elif how == "absolute":
        entry = str(victim)
    else:
        (cal / "evil").symlink_to(victim.parent, target_is_directory=True)
        entry = "evil/victim.jpg"
    _listing(cal, [mine, entry])
    with pytest.raises(DatasetError, match="outside the calibration folder") as e:
        build_calibration_set(cal, deck_dir, n=4, seed=1)
    assert repr(entry) in e.value.message and "nothing was deleted" in e.value.hint
    assert victim.is_file() and (cal / mine).is_file()  # nothing deleted, not even the set's own file
    r = CliRunner().invoke(app, ["calibration", "build", "--out", str(cal), "--n", "4", "--seed", "1"])
    assert r.exit_code == 1 and "outside the calibration folder" in " ".join(r.output.split())
    assert "Traceback" not in r.output and victim.is_file()


def test_load_never_reads_outside_the_calibration_folder(tmp_path, deck_dir, victim):
    cal = tmp_path / "cal"
    build_calibration_set(cal, deck_dir, n=4, seed=0)
    (cal / "CD" / "link.jpg").symlink_to(victim)
    for entry in ("../outside/victim.jpg", str(victim), "CD/link.jpg"):
        _listing(cal, [entry])  # the sha1 matches the victim's bytes: only the path check stops it
        with pytest.raises(DatasetError, match="outside the calibration folder"):
            load_calibration(cal)
    for bad, msg in (({"files": [{"file": 7, "sha1": "x"}]}, "malformed entry"), ({"files": {}}, "no 'files' list"),
                     ([1, 2], "no 'files' list")):
        (cal / "calibration.json").write_text(json.dumps(bad))
        with pytest.raises(DatasetError, match=msg):
            load_calibration(cal)
