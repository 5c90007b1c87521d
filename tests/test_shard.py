"""``--shard I/N``: a stable, hash-based split of one batch (defocus_cli.sharding, batch.plan_batch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defocus_cli.batch import BatchOptions, plan_batch
from defocus_cli.cli import app
from defocus_cli.errors import UsageError
from defocus_cli.sharding import Shard, parse_shard, shard_index


def run(*args: str, input: bytes | None = None):  # noqa: A002, ANN201
    return CliRunner().invoke(app, list(args), input=input)


def _tree(root: Path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(p)


NAMES = [f"{d}img{i}.png" for d in ("", "sub/", "sub/deep/") for i in range(5)]


def test_parse_shard_accepts_i_of_n_and_refuses_everything_else() -> None:
    assert parse_shard(None) is None
    assert parse_shard("0/1") == Shard(0, 1)
    assert parse_shard(" 2/3 ") == Shard(2, 3)
    for bad in ("3/3", "1", "/3", "2/", "-1/3", "a/b", "0/0", "1.5/3", "", "1/2/3"):
        with pytest.raises(UsageError, match="^shard ") as e:  # names the value; the CLI says --shard
            parse_shard(bad)
        assert e.value.param == "shard"
    with pytest.raises(UsageError, match="SLURM_ARRAY_TASK_ID"):
        parse_shard("/4")  # an unset variable
    with pytest.raises(UsageError, match="0-based"):
        parse_shard("4/4")


def test_shard_index_is_pinned_and_path_separator_neutral() -> None:
    # the split must never change between versions or machines: finished shards would be redone or missed
    assert [shard_index(f"img{i}.jpg", 3) for i in range(8)] == [2, 1, 1, 2, 0, 1, 2, 1]
    assert shard_index("sub/deep/IMG_0001.CR3", 1000) == 303
    assert shard_index("a/b.jpg", 1000) == int.from_bytes(
        __import__("hashlib").sha256(b"a/b.jpg").digest()[:8], "big") % 1000
    assert shard_index("a\\b.jpg", 97) == shard_index("a/b.jpg", 97)
    counts = np.bincount([shard_index(f"photo_{i:05d}.jpg", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900, counts  # roughly even


def test_three_shards_cover_every_input_once_and_rerun_with_skip_existing_does_nothing(
        tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    calls = use_engine("identity")
    src, out = tmp_path / "in", tmp_path / "out"
    _tree(src, NAMES)
    seen: list[str] = []
    for i in range(3):
        r = run("deblur", str(src), "-r", "-o", str(out) + "/", "--shard", f"{i}/3", "--json", "--skip-existing")
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["shard"] == f"{i}/3"
        assert all(it["status"] == "ok" for it in doc["items"])
        seen += [Path(it["input"]).relative_to(src).as_posix() for it in doc["items"]]
    assert sorted(seen) == sorted(NAMES)  # every input exactly once
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(NAMES)
    n_loads = len(calls)
    assert 1 <= n_loads <= 3
    for i in range(3):  # resume: nothing left to do, the model is not even loaded
        r = run("deblur", str(src), "-r", "-o", str(out) + "/", "--shard", f"{i}/3", "--json", "--skip-existing")
        assert r.exit_code == 0, r.stderr
        assert {it["status"] for it in json.loads(r.stdout)["items"]} <= {"skipped"}
    assert len(calls) == n_loads


def test_adding_files_does_not_move_inputs_between_shards(tmp_path: Path) -> None:
    _tree(tmp_path / "in", NAMES)
    opts = [BatchOptions(output=str(tmp_path / "out") + "/", recursive=True, shard=Shard(i, 4)) for i in range(4)]

    def split() -> dict[str, int]:
        return {it.key: i for i, o in enumerate(opts) for it in plan_batch([str(tmp_path / "in")], o)}

    before = split()
    assert len(before) == len(NAMES)
    _tree(tmp_path / "in", [f"new{i}.png" for i in range(10)] + ["sub/aaa.png"])
    after = split()
    assert len(after) == len(NAMES) + 11
    assert {k: after[k] for k in before} == before


def test_key_is_relative_to_the_input_folder_so_any_mount_point_agrees(tmp_path: Path) -> None:
    for root in (tmp_path / "a", tmp_path / "b" / "elsewhere"):
        _tree(root, NAMES)
    keys = [[(it.key, i) for i in range(3) for it in plan_batch(
        [str(root)], BatchOptions(output=str(tmp_path / "o") + "/", recursive=True, shard=Shard(i, 3)))]
        for root in (tmp_path / "a", tmp_path / "b" / "elsewhere")]
    assert sorted(keys[0]) == sorted(keys[1])


def test_collisions_are_checked_on_the_whole_mapping(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    # a.png and a.jpg both become out/a.png; whichever shard holds one of them, every shard refuses
    for name in ("a.png", "a.jpg"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    for i in range(4):
        r = run("deblur", str(tmp_path / "a.png"), str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out") + "/",
                "--format", "png", "--shard", f"{i}/4")
        assert r.exit_code == 2 and "would both be written" in r.stderr, (i, r.stderr)


def test_other_shards_outputs_do_not_block_a_shard_but_its_own_do(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    src, out = tmp_path / "in", tmp_path / "out"
    _tree(src, NAMES)
    r = run("deblur", str(src), "-r", "-o", str(out) + "/", "--shard", "0/2")
    assert r.exit_code == 0, r.stderr
    r = run("deblur", str(src), "-r", "-o", str(out) + "/", "--shard", "1/2")  # 0/2's outputs exist: fine
    assert r.exit_code == 0, r.stderr
    r = run("deblur", str(src), "-r", "-o", str(out) + "/", "--shard", "1/2")  # its own exist: refused
    assert r.exit_code == 2 and "already exist" in r.stderr


@pytest.mark.parametrize("value", ["3/3", "x", "/3", "-1/2"])
def test_bad_shard_is_a_one_line_usage_error(tmp_path: Path, use_engine, value: str) -> None:  # noqa: ANN001
    calls = use_engine("identity")
    _tree(tmp_path, ["a.png"])
    r = run("deblur", str(tmp_path / "a.png"), "--shard", value)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --shard"), r.stderr
    assert calls == []


def test_stdin_cannot_be_sharded(use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    r = run("deblur", "-", "-o", "-", "--format", "png", "--shard", "0/2", input=b"x")
    assert r.exit_code == 2 and "stdin" in r.stderr


def test_deconv_shards_too(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _tree(src, NAMES[:5])
    seen: list[str] = []
    for i in range(2):
        r = run("deconv", str(src), "-o", str(out) + "/", "--radius", "1", "--shard", f"{i}/2", "--json")
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["shard"] == f"{i}/2"
        seen += [Path(it["input"]).name for it in doc["items"]]
    assert sorted(seen) == sorted(NAMES[:5])
