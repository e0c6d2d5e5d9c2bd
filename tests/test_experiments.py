"""Every experiment file runs end to end on the tiny models in smoke mode (issue 5): collection, training,
evaluation and records, for every arm of its first seed, with prefix tuning on the tiny pure Transformer and
the mechanism analyses included. Runs in-process, sharing one results store and cache across experiments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import run
from s0.run import records
from s0.run.config import MethodConfig, ModelConfig, TaskConfig
from s0.run.pipeline import run_all
from s0.run.plan import expand
from s0.tasks.base import BUNDLED_DATA, read_data

EXPERIMENTS = sorted(p.stem for p in run.CONF.glob("experiment/*.yaml"))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, Path]:
    """Results, cache and a data root: the bundled data plus a Spider fixture (a concert_singer
    database built from SQL, and its dev questions standing in for the missing train split)."""
    tmp = tmp_path_factory.mktemp("experiments")
    data = tmp / "data"
    data.mkdir()
    for name in ("gsm8k", "math500"):  # the bundled copies (gzipped; the loaders read .gz)
        (data / name).symlink_to(Path(BUNDLED_DATA) / name)
    (data / "spider").mkdir()
    dev = [q for q in json.loads(read_data(None, "spider/dev.json")) if q["db_id"] == "concert_singer"]
    (data / "spider" / "dev.json").write_text(json.dumps(dev))
    (data / "spider" / "train_spider.json").write_text(json.dumps(dev[::-1]))
    from tests.fixtures.spider.build import build_dbs

    build_dbs(str(data / "spider" / "database"))
    yield {"results": tmp / "runs", "cache": tmp / "cache", "data": data}
    shutil.rmtree(tmp, ignore_errors=True)


# main_falcon (baseline, S0 on Mamba-2, LoRA; ~40 s) in the default suite; every other experiment, main_qwen's
# six arms included (~90 s), under `-m slow` (make test-slow).
@pytest.mark.parametrize(
    "name", [n if n == "main_falcon" else pytest.param(n, marks=pytest.mark.slow) for n in EXPERIMENTS]
)
def test_experiment_runs_end_to_end_in_smoke_mode(compose, store, name):
    overrides = [f"experiment={name}", "debug=smoke", f"paths.results={store['results']}",
                 f"paths.cache={store['cache']}", f"paths.data_root={store['data']}"]  # fmt: skip
    run_cfg, plain = run.to_run_config(compose(overrides))
    first_seed = (
        next(iter(run_cfg.seeds_per_model.values()), run_cfg.seeds)[0] if run_cfg.models else run_cfg.seeds[0]
    )
    run_cfg.seed = first_seed
    methods = run.load_group("method", MethodConfig)
    models = run.load_group("model", ModelConfig)
    tasks = run.load_group("task", TaskConfig, resolve_with={"paths": plain["paths"]})
    runs = expand(run_cfg, methods, models, tasks)
    run_all(runs, run_cfg, progress=False)

    res = records.load_results(store["results"])
    mine = res.metrics[(res.metrics.experiment == name) & (res.metrics.metric == "pass@1")]
    assert sorted(set(zip(mine.arm, mine.eval_task))) == sorted({(r.arm, r.eval_task.name) for r in runs})
    assert mine.value.between(0, 100).all()
    if run_cfg.analyses:  # mechanism: the three Sec 6 outputs sit beside the S0 run
        s0_dirs = [store["results"] / r.run_id for r in runs if r.method.name == "s0"]
        assert all(sorted(p.name for p in (d / "analysis").iterdir()) for d in s0_dirs)
