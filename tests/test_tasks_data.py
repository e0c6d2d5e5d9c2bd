"""The benchmark data bundled with s0: every file listed and verified, licences beside it, a corrupted or
altered copy refused in one line, local folders (plain or gzipped); and `make data` (scripts/fetch_data.py):
one line offline, the hub files and Spider's release zip written where the loaders read them."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from s0.tasks import TaskDataError, get_task
from s0.tasks import base as tasks_base
from s0.tasks.base import BUNDLED_DATA, CHECKSUMS, read_data
from tests.fixtures.spider.build import build_dbs

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = Path(BUNDLED_DATA)
FILES = [
    "gsm8k/test.jsonl",
    "gsm8k/train.jsonl",
    "math500/test.jsonl",
    "spider/dev.json",
    "spider/tables.json",
]


def sums(folder: Path) -> dict[str, str]:
    return {n: d for d, n in (line.split() for line in (folder / CHECKSUMS).read_text().splitlines())}


def load_script():
    spec = importlib.util.spec_from_file_location("fetch_data", ROOT / "scripts" / "fetch_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_bundled_file_is_listed_verified_and_licensed():
    shipped = sorted(str(p.relative_to(BUNDLED))[: -len(".gz")] for p in BUNDLED.rglob("*.gz"))
    assert shipped == sorted(FILES) == sorted(sums(BUNDLED))
    for name in FILES:
        text = read_data(None, name)
        assert hashlib.sha256(text.encode()).hexdigest() == sums(BUNDLED)[name]
    readme = (BUNDLED / "README.md").read_text()
    assert all(f"{n}.gz" in readme for n in FILES)
    for lic in ("GSM8K-MIT.txt", "MATH-MIT.txt", "Spider-CC-BY-SA-4.0.txt"):
        assert lic in readme and (BUNDLED / "LICENSES" / lic).stat().st_size > 200
    assert sum(p.stat().st_size for p in BUNDLED.rglob("*")) < 3_000_000  # a few MB at most


def test_bundled_sizes_are_the_full_releases():
    assert len(read_data(None, "gsm8k/train.jsonl").splitlines()) == 7473
    assert len(get_task("gsm8k", n_train=None).load_split("train")) == 7473
    assert len(get_task("math500").load_split("eval")) == 250
    assert len(json.loads(read_data(None, "spider/dev.json"))) == 1034
    assert len(json.loads(read_data(None, "spider/tables.json"))) == 166


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the bundled folder, manifest included."""
    dest = tmp_path / "data"
    shutil.copytree(BUNDLED, dest)
    return dest


def one_line_error(data_root, name: str, match: str) -> None:
    with pytest.raises(TaskDataError, match=match) as err:
        read_data(str(data_root) if data_root else None, name)
    assert "\n" not in str(err.value)


def test_altered_copy_is_refused(copy):
    path = copy / "gsm8k" / "test.jsonl.gz"
    text = gzip.decompress(path.read_bytes()).decode().replace("#### 18", "#### 19", 1)
    path.write_bytes(gzip.compress(text.encode()))
    one_line_error(copy, "gsm8k/test.jsonl", r"does not match its sha256 .*corrupted or altered")
    assert len(get_task("math500", data_root=str(copy)).load_split("eval")) == 250  # other files still load


def test_corrupted_copy_is_refused(copy):
    path = copy / "math500" / "test.jsonl.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    one_line_error(copy, "math500/test.jsonl", r"math500/test\.jsonl\.gz")
    path.write_bytes(bytes(raw[: len(raw) // 3]))  # truncated
    one_line_error(copy, "math500/test.jsonl", r"cannot read .*math500/test\.jsonl\.gz")


def test_bundled_file_missing_from_the_manifest_is_refused(copy, monkeypatch):
    monkeypatch.setattr(tasks_base, "BUNDLED_DATA", str(copy))
    assert len(get_task("gsm8k").load_split("eval")) == 1319
    lines = (copy / CHECKSUMS).read_text().splitlines()
    (copy / CHECKSUMS).write_text("\n".join(ln for ln in lines if "gsm8k/test" not in ln) + "\n")
    one_line_error(None, "gsm8k/test.jsonl", r"does not match its sha256")


def test_local_folder_plain_or_gzipped_without_manifest(tmp_path):
    rows = [{"question": "1+1?", "answer": "1+1=2\n#### 2"}, {"question": "2+2?", "answer": "#### 4"}]
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(tmp_path / "gsm8k" / "train.jsonl.gz", "wt") as f:
        f.write(json.dumps(rows[1]) + "\n")
    task = get_task("gsm8k", data_root=str(tmp_path))
    assert [e.gold for e in task.load_split("eval")] == ["2", "4"]
    assert [e.gold for e in task.load_split("train")] == ["4"]


def test_missing_files_are_one_line_each(tmp_path):
    one_line_error(tmp_path, "math500/test.jsonl", r"missing math500/test\.jsonl .*paths\.data_root=")
    one_line_error(None, "spider/train_spider.json", r"train_spider\.json is not bundled.*make data")


def run_fetch(tmp_path, *args, **env):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_data.py"), "--out", str(tmp_path / "out"),
                           *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env})  # fmt: skip


def test_make_data_offline_is_one_line(tmp_path):
    for env in ({"HF_ENDPOINT": "http://127.0.0.1:9"}, {"HF_HUB_OFFLINE": "1"}):
        out = run_fetch(tmp_path, **env)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.count("\n") == 1 and "cannot reach the Hugging Face hub" in out.stderr
    assert not (tmp_path / "out").exists()


def test_make_data_writes_what_the_loaders_read(tmp_path, monkeypatch):
    """With a stand-in for `datasets`: GSM8K in the release's own format (so its test file equals the bundled
    one, byte for byte), MATH-500 and Spider questions, and a SHA256SUMS the loaders then check."""
    fetch = load_script()
    gsm = [json.loads(line) for line in read_data(None, "gsm8k/test.jsonl").splitlines()]
    math = [dict(json.loads(line), unique_id=f"u{i}") for i, line in enumerate(read_data(None, "math500/test.jsonl").splitlines())]  # fmt: skip
    dev = [
        {k: q[k] for k in ("db_id", "query", "question")}
        for q in json.loads(read_data(None, "spider/dev.json"))
    ]
    hub = {("openai/gsm8k", "test"): gsm, ("openai/gsm8k", "train"): gsm[:3], ("HuggingFaceH4/MATH-500", "test"): math,
           ("xlangai/spider", "train"): dev[:5], ("xlangai/spider", "validation"): dev}  # fmt: skip
    fake = types.SimpleNamespace(load_dataset=lambda repo, config, split: hub[repo, split])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(fetch, "hub_unreachable", lambda: None)
    out = tmp_path / "out"
    assert fetch.main(["--out", str(out)]) == 0
    written = sums(out)
    assert sorted(written) == ["gsm8k/test.jsonl", "gsm8k/train.jsonl", "math500/test.jsonl", "spider/dev.json",
                               "spider/train_spider.json"]  # fmt: skip
    assert written["gsm8k/test.jsonl"] == sums(BUNDLED)["gsm8k/test.jsonl"]
    assert len(get_task("gsm8k", data_root=str(out)).load_split("train")) == 3
    assert [e.gold for e in get_task("math500", data_root=str(out)).load_split("eval")][:3] == [
        r["answer"] for r in math[250:253]
    ]
    (out / "math500" / "test.jsonl").write_text("{}\n")
    one_line_error(out, "math500/test.jsonl", "does not match")


def test_make_data_unpacks_the_spider_release(tmp_path, monkeypatch):
    """The release zip's databases and questions land where SpiderTask looks by default (data_root/spider/
    database); the rest of the zip, and paths that would escape the folder, are skipped."""
    fetch = load_script()
    dbs = Path(build_dbs(str(tmp_path / "dbs")))
    dev = [q for q in json.loads(read_data(None, "spider/dev.json")) if q["db_id"] == "concert_singer"]
    zip_path = tmp_path / "spider.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        z.write(
            dbs / "concert_singer" / "concert_singer.sqlite",
            "spider/database/concert_singer/concert_singer.sqlite",
        )
        z.writestr("spider/dev.json", json.dumps(dev))
        z.writestr("spider/train_spider.json", json.dumps(dev[::-1]))
        z.writestr("spider/README.txt", "not needed")
        z.writestr("../evil.json", "[]")
    monkeypatch.setattr(fetch, "hub_unreachable", lambda: "offline")
    out = tmp_path / "out"
    assert (
        fetch.main(["--out", str(out), "--spider-zip", str(zip_path)]) == 2
    )  # the hub part fails, Spider stays
    assert sorted(sums(out)) == ["spider/database/concert_singer/concert_singer.sqlite", "spider/dev.json",
                                 "spider/train_spider.json"]  # fmt: skip
    assert not (tmp_path / "evil.json").exists() and not (out / "spider" / "README.txt").exists()
    task = get_task("spider", data_root=str(out))
    assert len(task.load_split("eval")) == 45 and len(task.load_split("train")) == 45
    assert 'CREATE TABLE "singer_in_concert"' in task.load_split("eval")[0].prompt_messages[0]["content"]
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    assert fetch.main(["--out", str(out), "--spider-zip", str(bad)]) == 2
