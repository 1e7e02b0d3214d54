"""``edgecrack run --shard K/N``: deterministic, disjoint, complete shards; their logs merged by ``report``."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path, PureWindowsPath

import pytest
from typer.testing import CliRunner

from edgecrack.cli import app
from edgecrack.data import list_images
from edgecrack.errors import ConfigError
from edgecrack.shard import glob_root, parse_shard, select_shard, shard_of
from edgecrack.loop.config import SourceOptions
from edgecrack.loop.sources import open_source

runner = CliRunner()


@pytest.mark.parametrize("spec,k_n", [("1/1", (1, 1)), ("3/3", (3, 3)), (" 2 / 5 ", (2, 5)), ("10/16", (10, 16))])
def test_parse_shard(spec, k_n):
    assert parse_shard(spec) == k_n


@pytest.mark.parametrize("spec,msg", [("0/3", "K must be within 1..N"), ("4/3", "K must be within 1..N"),
                                      ("1/0", "K must be within 1..N"), ("3", "not of the form K/N"),
                                      ("a/b", "not of the form K/N"), ("-1/3", "not of the form K/N"), ("", "K/N")])
def test_bad_shard_specs_are_clear_errors(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_shard(spec)


def test_three_shards_of_a_real_folder_are_disjoint_and_cover_it(deck_dir):
    files = list_images(deck_dir)
    assert len(files) == 400
    shards = [select_shard(files, deck_dir, (k, 3)) for k in (1, 2, 3)]
    sets = [set(s) for s in shards]
    assert sum(len(s) for s in shards) == len(files)  # no image twice
    assert sets[0] | sets[1] | sets[2] == set(files)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    for s in shards:  # a hash spreads 400 images evenly: 133 expected, binomial sd ~9.4
        assert 100 <= len(s) <= 170, [len(x) for x in shards]
        assert s == sorted(s)  # the listing order is kept within a shard


def test_shards_are_stable_across_orderings_roots_and_runs(deck_dir, tmp_path):
    files = list_images(deck_dir)
    ref = [set(select_shard(files, deck_dir, (k, 3))) for k in (1, 2, 3)]
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    assert [set(select_shard(shuffled, deck_dir, (k, 3))) for k in (1, 2, 3)] == ref
    # the same archive mounted elsewhere (another worker's machine): the same split by relative path
    copy = tmp_path / "mnt" / "survey"
    shutil.copytree(deck_dir, copy)
    moved = [set(p.relative_to(copy) for p in select_shard(list_images(copy), copy, (k, 3))) for k in (1, 2, 3)]
    assert moved == [{p.relative_to(deck_dir) for p in s} for s in ref]
    # posix separators whatever the OS, and pinned: a changed hash would silently re-split half-done archives
    assert shard_of(PureWindowsPath("CD\\7001-115.jpg"), 3) == shard_of(Path("CD") / "7001-115.jpg", 3) \
        == shard_of("CD/7001-115.jpg", 3)
    assert (shard_of("CD/7001-115.jpg", 3), shard_of("CD/7001-115.jpg", 16)) == PINNED


PINNED = (3, 11)


def test_adding_an_image_moves_no_other(deck_dir, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(deck_dir / "CD", root / "CD")
    before = {k: set(select_shard(list_images(root), root, (k, 4))) for k in range(1, 5)}
    shutil.copy(deck_dir / "UD" / sorted(p.name for p in (deck_dir / "UD").iterdir())[0], root / "CD" / "new.jpg")
    after = {k: set(select_shard(list_images(root), root, (k, 4))) for k in range(1, 5)}
    grown = [k for k in after if after[k] != before[k]]
    assert len(grown) == 1 and after[grown[0]] - before[grown[0]] == {root / "CD" / "new.jpg"}


def test_glob_root_and_glob_sources_split_by_path_below_it(deck_dir, tmp_path):
    assert glob_root("survey/2024/**/*.jpg") == Path("survey/2024")
    assert glob_root("/data/s[12]/*.jpg") == Path("/data")
    assert glob_root("*.jpg") == Path(".")
    pattern = str(deck_dir / "*" / "*.jpg")
    opts = [SourceOptions(shard=(k, 3)) for k in (1, 2, 3)]
    got = [open_source(pattern, o).paths for o in opts]
    want = [select_shard(list_images(deck_dir), deck_dir, (k, 3)) for k in (1, 2, 3)]
    assert got == want  # the same split as the folder itself
    assert open_source(str(deck_dir), SourceOptions(shard=(2, 3))).paths == want[1]


@pytest.mark.parametrize("args,msg", [
    (["--source", "{folder}", "--shard", "0/3"], "K must be within 1..N"),
    (["--source", "{folder}", "--shard", "three"], "is not of the form K/N"),
    (["--camera", "0", "--shard", "1/2"], "--shard splits an image folder or a glob; --camera 0 is neither"),
    (["--source", "{image}", "--shard", "1/2"], "is neither"),
    (["--source", "rtsp://cam.local/live", "--shard", "1/2"], "is neither"),
])
def test_run_shard_user_errors_exit_1_without_traceback(args, msg, tiny_run, holdout_deck):
    image = next((holdout_deck / "CD").glob("*.jpg"))
    args = [a.replace("{folder}", str(holdout_deck)).replace("{image}", str(image)) for a in args]
    r = runner.invoke(app, ["run", "--model", str(tiny_run), *args])
    assert r.exit_code == 1, r.output
    assert msg in " ".join(r.output.split()) and "Traceback" not in r.output


def _frames(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines() if json.loads(x).get("type") == "frame"]


def test_two_real_shard_logs_merge_into_one_report(tiny_run, holdout_deck, tmp_path):
    logs = [tmp_path / "logs" / f"shard{k}.jsonl" for k in (1, 2)]
    for k, log in zip((1, 2), logs):
        r = runner.invoke(app, ["run", "--model", str(tiny_run), "--source", str(holdout_deck), "--shard", f"{k}/2",
                                "--tile", "0", "--log", str(log), "--quiet", "--threads", "1"])
        assert r.exit_code == 0, r.output
    starts = [json.loads(log.read_text().splitlines()[0]) for log in logs]
    assert [s["config"]["source_options"]["shard"] for s in starts] == [[1, 2], [2, 2]]  # recorded in each log
    seen = [[f["position"]["path"] for f in _frames(log)] for log in logs]
    everything = sorted(str(p) for p in list_images(holdout_deck))
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == everything
    out = tmp_path / "report"
    r = runner.invoke(app, ["report", *map(str, logs), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"{len(everything)} frames" in r.output and "duplicate" not in r.output
    with open(out / "findings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    flagged = sum(f["cracked"] for log in logs for f in _frames(log))
    assert len(rows) == flagged > 0  # every flagged frame of both shards, once
    assert {r["file"] for r in rows} <= set(everything)
