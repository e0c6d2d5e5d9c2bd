"""Fetch the full benchmark data into one folder for `paths.data_root` (what `make data` runs).

GSM8K (train, test), MATH-500 and Spider's questions (train, dev) come from the Hugging Face hub through
`datasets` (pip install -e '.[data]'). Spider's SQLite databases are not on the hub: give the Spider release's
zip (--spider-zip) and its databases, questions and tables.json are unpacked instead (this part works offline).
A SHA256SUMS of every file written lets the loaders refuse a copy altered later.

python scripts/fetch_data.py --out data                                 # then paths.data_root=data
python scripts/fetch_data.py --out data --spider-zip ~/spider.zip       # + task.db_dir defaults to data/spider/database
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s0.tasks.base import CHECKSUMS

SPIDER_JSON = ("train_spider.json", "train_others.json", "dev.json", "tables.json")


class FetchError(RuntimeError):
    """Something the user can fix; printed as one line."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data", help="folder to fill (default: data)")
    ap.add_argument("--spider-zip", help="the Spider release's zip (spider.zip / spider_data.zip)")
    args = ap.parse_args(argv)
    out, written = Path(args.out), []
    try:
        if args.spider_zip:
            unpack_spider(Path(args.spider_zip).expanduser(), out, written)
        fetch_hub(out, written, spider=not args.spider_zip)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:  # what was written stays usable (and checked) even when a later step fails
        update_checksums(out, written)
    print(f"{len(written)} files in {out}; use them with paths.data_root={out}")
    return 0


def hub_unreachable() -> str | None:
    """Why the hub cannot be used, or None; one quick request instead of datasets' long retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5).close()
    except urllib.error.HTTPError:
        return None  # the server answered
    except (OSError, ValueError) as e:
        return f"{url}: {getattr(e, 'reason', e)}"
    return None


def fetch_hub(out: Path, written: list[str], spider: bool) -> None:
    reason = hub_unreachable()
    if reason:
        raise FetchError(
            f"cannot reach the Hugging Face hub ({reason}); GSM8K, MATH-500 and Spider dev are bundled with s0 "
            "(leave paths.data_root unset); the Spider databases come from its release (make data SPIDER_ZIP=<zip>)"
        )
    try:
        import datasets
    except ImportError as e:
        raise FetchError("`make data` needs the datasets package: pip install -e '.[data]'") from e

    def rows(repo: str, config: str | None, split: str) -> list[dict]:
        try:
            return [dict(r) for r in datasets.load_dataset(repo, config, split=split)]
        except Exception as e:  # gated, renamed, network drop: one line either way
            raise FetchError(f"cannot load {repo} ({split}) from the hub: {type(e).__name__}: {e}") from e

    for split in ("train", "test"):
        # The release's own format (json.dumps of question, answer): the test file then equals the bundled one.
        gsm = [
            {"question": r["question"], "answer": r["answer"]} for r in rows("openai/gsm8k", "main", split)
        ]
        written.append(write_jsonl(out, f"gsm8k/{split}.jsonl", gsm))
    written.append(write_jsonl(out, "math500/test.jsonl", rows("HuggingFaceH4/MATH-500", None, "test")))
    if spider:
        for split, name in (("train", "train_spider.json"), ("validation", "dev.json")):
            text = json.dumps(rows("xlangai/spider", None, split), indent=4)
            written.append(write_text(out, f"spider/{name}", text))


def unpack_spider(zip_path: Path, out: Path, written: list[str]) -> None:
    """The release's database/<db_id>/* and its question and schema files, into out/spider/."""
    if not zip_path.is_file():
        raise FetchError(f"no Spider zip at {zip_path}; download it from https://yale-lily.github.io/spider")
    try:
        with zipfile.ZipFile(zip_path) as z:
            for info in z.infolist():
                parts = Path(info.filename).parts
                if info.is_dir() or ".." in parts or Path(info.filename).is_absolute() or "__MACOSX" in parts:
                    continue
                if "database" in parts:
                    rel = "spider/database/" + "/".join(parts[parts.index("database") + 1 :])
                elif parts[-1] in SPIDER_JSON and len(parts) <= 2:
                    rel = f"spider/{parts[-1]}"
                else:
                    continue
                dest = out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                written.append(rel)
    except zipfile.BadZipFile as e:
        raise FetchError(f"{zip_path} is not a readable zip: {e}") from e
    if not any(r.startswith("spider/database/") for r in written):
        raise FetchError(f"{zip_path} holds no database/ folder; is it the Spider release?")


def write_jsonl(out: Path, rel: str, rows: list[dict]) -> str:
    return write_text(out, rel, "".join(json.dumps(r) + "\n" for r in rows))


def write_text(out: Path, rel: str, text: str) -> str:
    dest = out / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)  # never a half-written file under the final name
    return rel


def update_checksums(out: Path, rels: list[str]) -> None:
    """Add or refresh the lines of `rels` in out/SHA256SUMS (sha256sum format), keeping the others."""
    if not rels:
        return
    path = out / CHECKSUMS
    sums = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                sums[name.lstrip("*")] = digest
    for rel in rels:
        sums[rel] = hashlib.sha256((out / rel).read_bytes()).hexdigest()
    path.write_text("".join(f"{sums[name]}  {name}\n" for name in sorted(sums)), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
