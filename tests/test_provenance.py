"""provenance.json's `sandbox` entry: a weak-isolation run is marked (issue 14, item 1)."""

from __future__ import annotations

import importlib
import json

import pytest

from s0 import sandbox
from s0.run.provenance import provenance


@pytest.fixture
def restore_policy():
    yield
    sandbox.set_isolation("required")


def test_provenance_records_required_isolation(restore_policy):
    prov = json.loads(json.dumps(provenance(".")))  # JSON-serialisable as written
    assert prov["sandbox"]["isolation"] == "required"
    assert set(prov["sandbox"]["layers"]) >= {"pidns", "mount", "netns", "jail", "uid_drop"}
    assert prov["sandbox"]["weak"] == bool(prov["sandbox"]["missing"])


def test_weak_run_is_marked(monkeypatch, restore_policy):
    iso_mod = importlib.import_module("s0.sandbox.isolation")
    monkeypatch.setattr(iso_mod, "isolation", lambda: {"mount": False, "uid_drop": True, "pidns": False,
                                                       "netns": False, "jail": False, "ro_root": False})  # fmt: skip
    from s0.run.config import TaskConfig
    from s0.run.pipeline import task_for

    task_for(TaskConfig(name="humaneval"), "weak")  # the pipeline passes sandbox.isolation down here
    state = provenance(".")["sandbox"]
    assert state["isolation"] == "weak" and state["weak"] is True
    assert "pid namespace" in state["missing"]


def test_pipeline_refuses_before_any_work_without_isolation(monkeypatch, restore_policy):
    from s0.run.config import TaskConfig
    from s0.run.pipeline import PipelineError, task_for

    iso_mod = importlib.import_module("s0.sandbox.isolation")
    monkeypatch.setattr(iso_mod, "isolation", lambda: {"mount": False, "uid_drop": True, "pidns": False,
                                                       "netns": False, "jail": False, "ro_root": False})  # fmt: skip
    with pytest.raises(PipelineError, match=r"sandbox\.isolation=weak"):
        task_for(TaskConfig(name="humaneval"), "required")
    assert task_for(TaskConfig(name="humaneval"), "weak").name == "humaneval"  # weak: explicitly allowed
