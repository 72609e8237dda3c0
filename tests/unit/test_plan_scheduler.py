"""rotator.scheduler.PlanScheduler, the daemon's job bookkeeping over a real APScheduler: which planned starts hold a
job (those within the arming horizon), the arming tick, re-planning, unplanning and a reload's replace; and the
layout rule README states: rotator/scheduler.py owns APScheduler (rotator/schedules.py borrows its cron trigger
inside a function, to check cron expressions)."""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from rotator import scheduler as scheduler_module
from rotator.scheduler import ARM_JOB, PlanScheduler
from tests.test_layering import ROOT, imports_of, modules


class Fired:
    """The plan ids the scheduler fired, each with an Event to wait on."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def event(self, plan_id: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(plan_id, threading.Event())

    def __call__(self, plan_id: str) -> None:
        with self._lock:
            self.ids.append(plan_id)
        self.event(plan_id).set()


@pytest.fixture
def fired() -> Fired:
    return Fired()


@pytest.fixture
def plans(fired: Fired) -> Iterator[PlanScheduler]:
    scheduler = PlanScheduler(fired, workers=2)
    scheduler.start()
    yield scheduler
    scheduler.shutdown(wait=True)


def soon(seconds: float = 0.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_start_within_the_horizon_holds_a_job_and_fires_once(plans: PlanScheduler, fired: Fired) -> None:
    plans.plan("near", soon(0.2))
    assert plans.job_ids() >= {"near", ARM_JOB} and plans.armed_count == 1
    assert fired.event("near").wait(10)
    assert fired.ids == ["near"]
    assert "near" not in plans.job_ids() and plans.armed_count == 0  # a date trigger fires once
    assert plans.planned() == {"near": plans.planned()["near"]}  # still planned until the daemon re-plans it


def test_a_start_beyond_the_horizon_waits_for_the_arming_tick(
    plans: PlanScheduler, fired: Fired, monkeypatch: pytest.MonkeyPatch
) -> None:
    far = soon(scheduler_module.ARM_HORIZON.total_seconds() + 60)
    plans.plan("far", far)
    assert plans.planned() == {"far": far}
    assert "far" not in plans.job_ids() and plans.armed_count == 0
    plans.arm_due()
    assert "far" not in plans.job_ids()  # not near yet
    monkeypatch.setattr(scheduler_module, "ARM_HORIZON", timedelta(hours=1))  # as if the time had come
    plans.arm_due()
    assert "far" in plans.job_ids() and plans.armed_count == 1
    assert fired.ids == []


def test_replanning_further_out_removes_the_job(plans: PlanScheduler) -> None:
    plans.plan("p", soon(120))
    assert "p" in plans.job_ids()
    plans.plan("p", soon(scheduler_module.ARM_HORIZON.total_seconds() + 60))
    assert "p" not in plans.job_ids() and plans.armed_count == 0 and "p" in plans.planned()


def test_unplan_and_replace_forget_plans_and_their_jobs(plans: PlanScheduler, fired: Fired) -> None:
    plans.plan("kept", soon(120))
    plans.plan("removed", soon(120))
    plans.plan("unplanned", soon(120))
    plans.unplan("unplanned")
    assert "unplanned" not in plans.job_ids() and "unplanned" not in plans.planned()
    new_start = soon(60)
    plans.replace({"kept": new_start, "added": soon(0.2)})  # a reload: "removed" left the config
    assert set(plans.planned()) == {"kept", "added"} and plans.planned()["kept"] == new_start
    assert "removed" not in plans.job_ids()
    assert fired.event("added").wait(10)
    assert fired.ids == ["added"]


def test_every_runs_a_periodic_job_first_at_once(plans: PlanScheduler) -> None:
    ticked = threading.Event()
    plans.every("__tick__", 3600, ticked.set, first_now=True)
    assert ticked.wait(10)
    assert "__tick__" in plans.job_ids()


def test_shutdown_waits_for_a_job_in_flight(fired: Fired) -> None:
    entered, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow(plan_id: str) -> None:
        entered.set()
        release.wait(10)
        done.set()

    scheduler = PlanScheduler(slow, workers=1)
    scheduler.start()
    scheduler.plan("slow", soon())
    assert entered.wait(10)
    # APScheduler drops a fired date job just after handing it to a thread; a shutdown in between makes its own
    # thread fail on the missing job (harmless, but noisy): wait until the job is gone.
    deadline = time.monotonic() + 10
    while "slow" in scheduler.job_ids() and time.monotonic() < deadline:
        time.sleep(0.005)
    stopper = threading.Thread(target=scheduler.shutdown, kwargs={"wait": True})
    stopper.start()
    stopper.join(0.3)  # time for a shutdown that did not wait to return
    assert stopper.is_alive() and not done.is_set()
    release.set()
    stopper.join(10)
    assert done.is_set() and not stopper.is_alive() and not scheduler.running


def test_apscheduler_is_imported_where_readme_says() -> None:
    """README, Layout: rotator/scheduler.py owns APScheduler (triggers, the daemon's jobs); rotator/schedules.py
    borrows its cron trigger, imported inside the check, to refuse a cron expression that never fires."""
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in modules("rotator")
        if any(name == "apscheduler" or name.startswith("apscheduler.") for name in imports_of(path))
    )
    assert importers == ["rotator/scheduler.py", "rotator/schedules.py"]
    tree = ast.parse((ROOT / "rotator" / "schedules.py").read_text())
    top_level = [
        node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert not [name for name in top_level if name and name.startswith("apscheduler")]
