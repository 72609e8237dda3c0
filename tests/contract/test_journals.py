"""The journal contract: one suite run over every journal backend.

- sqlite: a file in a temporary directory;
- postgres: a fresh database per test in the session's throwaway PostgreSQL (tests/servers/postgres.py), owned by
  a role with a password, reached over TCP with the password in PGPASSWORD, so SCRAM really checks it.

Several processes and threads share one journal here, as several daemons (and each daemon's thread pool) do.
The PostgreSQL-only tests at the end cover what only a network journal has: lock waits between a fenced write
and a takeover, dropped connections, a server restart, logins, grants and the schema's version.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rotator.errors import ConfigError, LeaseLost, TransientError
from rotator.fingerprints import Fingerprint
from rotator.interfaces import Journal
from rotator.journal import open_journal
from rotator.logs import REDACTED, register_secret
from rotator.model import Lease, NotificationRecord, NotifyStatus, RunRecord, RunState, Step, Trigger
from tests.servers.postgres import PgServer

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["sqlite", "postgres"]
OWNER = "rotator_journal"  # owns each test database, creates the journal's tables
APP = "rotator_journal_app"  # only USAGE and SELECT, INSERT, UPDATE: the grants README documents
PROMOTED = (RunState.AWAITING_REVOKE, RunState.SUCCEEDED)


@dataclass
class Backend:
    """One journal backend under test: a URL that `open_journal` understands, and the journals opened on it."""

    kind: str
    url: str
    tmp: Path
    pg: PgServer | None = None
    dbname: str | None = None
    opened: list[Journal] = field(default_factory=list)

    def open(self) -> Journal:
        journal = open_journal(self.url, self.tmp)
        self.opened.append(journal)
        return journal

    def admin(self) -> psycopg.Connection[Any]:
        assert self.pg is not None and self.dbname is not None
        return self.pg.admin_conn(self.dbname)


@dataclass(frozen=True)
class PgRoles:
    owner_password: str
    app_password: str


@pytest.fixture(scope="session")
def pg_roles(pg_server: PgServer) -> PgRoles:
    roles = PgRoles(owner_password=uuid.uuid4().hex, app_password=uuid.uuid4().hex)
    pg_server.make_role(OWNER, roles.owner_password)
    pg_server.make_role(APP, roles.app_password)
    return roles


def fresh_database(pg: PgServer, owner: str = OWNER) -> str:
    name = f"journal_{uuid.uuid4().hex[:12]}"
    with pg.admin_conn() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
    return name


def pg_url(pg: PgServer, user: str, dbname: str, extra: str = "") -> str:
    return f"postgresql://{user}@{pg.host}:{pg.port}/{dbname}?sslmode=disable{extra}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    if request.param == "sqlite":
        made = Backend("sqlite", f"sqlite:///{tmp_path / 'journal.db'}", tmp_path)
    else:
        pg: PgServer = request.getfixturevalue("pg_server")
        roles: PgRoles = request.getfixturevalue("pg_roles")
        dbname = fresh_database(pg)
        monkeypatch.setenv("PGPASSWORD", roles.owner_password)  # inherited by the worker processes too
        made = Backend("postgres", pg_url(pg, OWNER, dbname), tmp_path, pg=pg, dbname=dbname)
    yield made
    for journal in made.opened:
        journal.close()


@pytest.fixture
def journal(backend: Backend) -> Journal:
    return backend.open()


def make_run(run_id: str, plan_id: str = "p", *, state: RunState = RunState.RUNNING, **extra: Any) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        plan_id=plan_id,
        state=state,
        trigger=Trigger.SCHEDULE,
        started_at=extra.pop("started_at", datetime.now(UTC)),
        store="local",
        secret_id=f"db/{plan_id}",
        **extra,
    )


def without_steps(records: dict[str, RunRecord]) -> dict[str, RunRecord]:
    return {plan: dataclasses.replace(r, steps=(), step=None) for plan, r in records.items()}


def leased(journal: Journal, plan_id: str, ttl: float = 60) -> Lease:
    lease = journal.acquire_lease(plan_id, ttl)
    assert lease is not None, f"plan {plan_id} should be free"
    return lease


def in_subprocess(backend: Backend, code: str, **env: str) -> str:
    """Run `code` in a fresh interpreter with `journal` opened on the backend; return what it prints."""
    script = (
        "import sys; from pathlib import Path; from rotator.journal import open_journal\n"
        f"journal = open_journal({backend.url!r}, Path({str(backend.tmp)!r}))\n{code}\njournal.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- runs and steps -------------------------------------------------------------------------------------------


def test_runs_and_steps_round_trip(journal: Journal) -> None:
    lease = leased(journal, "p")
    started = datetime(2024, 5, 1, 2, 3, 4, 567890, tzinfo=UTC)
    run = make_run(
        "r1",
        started_at=started,
        reason="suspected leak",
        operator="alice",
        version_id="v-new",
        previous_version_id="v-old",
        revoke_due_at=started + timedelta(hours=1),
        details={"consumers": ["10.0.0.1 app"], "last_used": None, "waited": 3},
    )
    journal.begin_run(run, lease)
    assert journal.get_run("r1") == run  # no steps yet: step is None, details round-trip as JSON

    journal.step_started("r1", Step.CREATE, "forward", lease)
    journal.step_finished("r1", Step.CREATE, "forward", lease)
    journal.step_started("r1", Step.STAGE, "forward", lease)
    journal.step_finished("r1", Step.STAGE, "forward", lease, error="target refused: timeout")
    journal.step_started("r1", Step.STAGE, "rollback", lease)

    got = journal.get_run("r1")
    assert got is not None
    assert [(s.step, s.action, s.status, s.error) for s in got.steps] == [
        (Step.CREATE, "forward", "succeeded", None),
        (Step.STAGE, "forward", "failed", "target refused: timeout"),
        (Step.STAGE, "rollback", "started", None),
    ]
    assert got.step is Step.STAGE  # the step in progress, or the last one done
    assert all(s.started_at.tzinfo is not None and s.run_id == "r1" for s in got.steps)
    assert got.steps[0].ended_at is not None and got.steps[0].ended_at >= got.steps[0].started_at
    assert got.steps[2].ended_at is None
    assert got.started_at == started and got.revoke_due_at == started + timedelta(hours=1)
    assert (got.reason, got.operator, got.version_id, got.previous_version_id) == (
        "suspected leak",
        "alice",
        "v-new",
        "v-old",
    )
    assert got.details == {"consumers": ["10.0.0.1 app"], "last_used": None, "waited": 3}
    assert journal.get_run("nope") is None


def test_runs_lists_newest_first_per_plan_and_overall(journal: Journal) -> None:
    base = datetime.now(UTC)
    for plan in ("a", "b"):
        lease = leased(journal, plan)
        for index in range(3):
            journal.begin_run(make_run(f"{plan}{index}", plan, started_at=base + timedelta(minutes=index)), lease)
        journal.release_lease(lease)
    assert [r.run_id for r in journal.runs("a")] == ["a2", "a1", "a0"]
    assert [r.run_id for r in journal.runs("b", limit=2)] == ["b2", "b1"]
    assert [r.run_id for r in journal.runs(limit=4)][:2] in (["a2", "b2"], ["b2", "a2"])
    assert len(journal.runs()) == 6 and journal.runs("none") == []


@pytest.mark.parametrize("field", ["plan_id", "started_at", "secret_id", "no_such_column"])
def test_update_run_refuses_fixed_and_unknown_fields(journal: Journal, field: str) -> None:
    lease = leased(journal, "p")
    journal.begin_run(make_run("r1"), lease)
    with pytest.raises(ValueError, match=f"cannot update run fields.*{field}"):
        journal.update_run("r1", lease, **{field: "x"})
    run = journal.get_run("r1")
    assert run is not None and run.plan_id == "p" and run.secret_id == make_run("r1").secret_id


def test_update_run_changes_only_the_named_fields(journal: Journal) -> None:
    lease = leased(journal, "p")
    run = make_run("r1", details={"old": True}, reason="scheduled")
    journal.begin_run(run, lease)
    ended = datetime.now(UTC)
    journal.update_run(
        "r1",
        lease,
        state=RunState.AWAITING_REVOKE,
        error=None,
        ended_at=ended,
        revoke_due_at=ended + timedelta(minutes=5),
        version_id="v2",
        details={"new": [1, 2]},
    )
    got = journal.get_run("r1")
    assert got is not None
    assert got.state is RunState.AWAITING_REVOKE and got.ended_at == ended
    assert got.revoke_due_at == ended + timedelta(minutes=5) and got.version_id == "v2"
    assert got.details == {"new": [1, 2]}  # replaced whole
    assert (got.reason, got.plan_id, got.started_at) == ("scheduled", "p", run.started_at)

    journal.update_run("r1", None, state=RunState.SUCCEEDED, error="revoked late")  # unfenced (status, resume)
    journal.update_run("r1", lease)  # nothing to change
    got = journal.get_run("r1")
    assert got is not None and (got.state, got.error) == (RunState.SUCCEEDED, "revoked late")
    with pytest.raises(ValueError, match="plan_id"):
        journal.update_run("r1", lease, plan_id="other")
    journal.update_run("missing", lease, state=RunState.STUCK)  # no such run: nothing happens, lease still held
    assert journal.get_run("missing") is None


def test_batch_queries_agree_with_the_per_plan_queries(journal: Journal) -> None:
    base = datetime.now(UTC) - timedelta(days=1)
    history = {
        "a": [RunState.SUCCEEDED, RunState.SUCCEEDED, RunState.ROLLED_BACK],
        "b": [RunState.ROLLED_BACK, RunState.AWAITING_REVOKE, RunState.STUCK],
        "c": [RunState.RUNNING],
        "d": [RunState.SUCCEEDED, RunState.ROLLING_BACK],
    }
    minute = 0
    for plan, states in history.items():
        lease = leased(journal, plan)
        for index, state in enumerate(states):
            minute += 1
            run = make_run(f"{plan}{index}", plan, state=state, started_at=base + timedelta(minutes=minute))
            journal.begin_run(run, lease)
            journal.step_started(run.run_id, Step.CREATE, "forward", lease)
            journal.step_finished(run.run_id, Step.CREATE, "forward", lease)
        journal.release_lease(lease)

    latest = journal.latest_runs()
    assert {plan: r.run_id for plan, r in latest.items()} == {"a": "a2", "b": "b2", "c": "c0", "d": "d1"}
    assert all(r.steps == () for r in latest.values())  # batch results come without steps: get_run has them
    assert without_steps(latest) == without_steps({plan: journal.runs(plan, limit=1)[0] for plan in history})

    successes = journal.last_successes()
    assert {plan: r.run_id for plan, r in successes.items()} == {"a": "a1", "b": "b1", "d": "d0"}
    singles = {plan: journal.last_success(plan) for plan in history}
    assert without_steps(successes) == without_steps({plan: r for plan, r in singles.items() if r is not None})
    assert singles["c"] is None and all(r.steps for r in singles.values() if r is not None)

    open_runs = journal.runs_in_state(RunState.RUNNING, RunState.ROLLING_BACK, RunState.STUCK)
    assert [r.run_id for r in open_runs] == ["b2", "c0", "d1"]  # oldest first
    assert [r.run_id for r in journal.runs_in_state(*PROMOTED, plan_id="b")] == ["b1"]
    assert [r.run_id for r in journal.runs_in_state(RunState.SUCCEEDED)] == ["a0", "a1", "d0"]
    assert journal.runs_in_state(RunState.SUCCEEDED, plan_id="c") == []


def test_fingerprints_are_kept_once_and_found_by_digest(journal: Journal) -> None:
    first = [Fingerprint("p1", "db/a", "v1", "secret", "a" * 32), Fingerprint("p1", "db/a", "v1", "id", "b" * 32)]
    journal.save_fingerprints(first)
    journal.save_fingerprints(first)  # the same again: ignored
    journal.save_fingerprints([Fingerprint("p2", "db/b", "v9", "secret", "a" * 32)])  # another plan, same digest
    journal.save_fingerprints([])
    found = journal.find_fingerprints(["a" * 32, "c" * 32])
    assert sorted((f.plan_id, f.version_id, f.kind) for f in found) == [("p1", "v1", "secret"), ("p2", "v9", "secret")]
    assert journal.find_fingerprints(["b" * 32]) == [first[1]]
    assert journal.find_fingerprints([]) == []


def test_failure_streaks_count_the_newest_failed_runs_in_a_row(journal: Journal) -> None:
    base = datetime.now(UTC) - timedelta(days=1)
    history = {
        "ok": [RunState.ROLLED_BACK, RunState.SUCCEEDED],
        "three": [RunState.SUCCEEDED, RunState.FAILED, RunState.ROLLED_BACK, RunState.STUCK],
        "never-succeeded": [RunState.ROLLED_BACK, RunState.FAILED],
        "running": [RunState.ROLLED_BACK, RunState.RUNNING],
        "one": [RunState.ROLLED_BACK, RunState.AWAITING_REVOKE, RunState.FAILED],
    }
    minute = 0
    for plan, states in history.items():
        lease = leased(journal, plan)
        for index, state in enumerate(states):
            minute += 1
            journal.begin_run(
                make_run(f"{plan}{index}", plan, state=state, started_at=base + timedelta(minutes=minute)), lease
            )
        journal.release_lease(lease)
    streaks = journal.failure_streaks()
    assert streaks == {"three": 3, "never-succeeded": 2, "one": 1}
    # the same as counting run by run
    for plan in history:
        counted = 0
        for record in journal.runs(plan, limit=100):
            if record.state not in (RunState.ROLLED_BACK, RunState.STUCK, RunState.FAILED):
                break
            counted += 1
        assert streaks.get(plan, 0) == counted


# -- notifications --------------------------------------------------------------------------------------------


def test_notifications_upsert_and_filter(journal: Journal) -> None:
    lease = leased(journal, "p")
    t0 = datetime.now(UTC)
    retry_at = t0 + timedelta(minutes=1)
    first = NotificationRecord("r1", "p", "ops", NotifyStatus.FAILED, True, 1, retry_at, "HTTP 503", t0)
    journal.save_notification(first, lease)
    journal.save_notification(NotificationRecord("r1", "p", "slack", NotifyStatus.SUCCEEDED, updated_at=t0), lease)
    journal.save_notification(
        NotificationRecord("r9", "q", "ops", NotifyStatus.PENDING, updated_at=t0 + timedelta(seconds=1)), None
    )
    assert journal.notifications(run_id="r1", plan_id="p")[0] == first

    # The same (run, notifier) again replaces the record, and it moves to the end of the order.
    retried = NotificationRecord("r1", "p", "ops", NotifyStatus.SUCCEEDED, required=True, attempts=2,
                                 updated_at=t0 + timedelta(seconds=2))  # fmt: skip
    journal.save_notification(retried, lease)
    assert [(n.run_id, n.notifier) for n in journal.notifications()] == [("r1", "slack"), ("r9", "ops"), ("r1", "ops")]
    assert journal.notifications(plan_id="p", run_id="r1")[-1] == retried
    assert [n.notifier for n in journal.notifications(plan_id="p")] == ["slack", "ops"]
    assert [n.run_id for n in journal.notifications(statuses=[NotifyStatus.PENDING, NotifyStatus.FAILED])] == ["r9"]
    assert journal.notifications(plan_id="q", statuses=[NotifyStatus.SUCCEEDED]) == []
    undated = NotificationRecord("r2", "p", "ops", NotifyStatus.GAVE_UP)
    journal.save_notification(undated, lease)
    saved = journal.notifications(run_id="r2")
    assert len(saved) == 1 and saved[0].updated_at is not None  # the journal stamps the time when none is given


# -- leases ---------------------------------------------------------------------------------------------------


def test_lease_is_exclusive_and_released(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    lease = leased(a, "p")
    assert b.acquire_lease("p", 60) is None and a.acquire_lease("p", 60) is None
    assert b.lease_of("p") == lease and b.live_leases() == {"p": lease}
    assert lease.expires_at > datetime.now(UTC) + timedelta(seconds=50)
    renewed = a.renew_lease(lease, 120)
    assert renewed.token == lease.token and renewed.expires_at > lease.expires_at
    a.release_lease(renewed)
    assert b.lease_of("p") is None and b.live_leases() == {}
    again = leased(b, "p")
    assert again.token == lease.token + 1  # the fencing token only grows
    a.release_lease(lease)  # a stale release changes nothing
    assert a.lease_of("p") == again
    other = leased(a, "q")
    assert set(b.live_leases()) == {"p", "q"} and other.token == 1


def test_an_expired_lease_is_free(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    first = leased(a, "p", ttl=1.0)
    assert b.acquire_lease("p", 60) is None
    second = wait_for(lambda: b.acquire_lease("p", 60), "the lease to expire")
    assert datetime.now(UTC) >= first.expires_at  # not granted before the first one expired
    assert second.token == first.token + 1
    assert a.lease_of("p") == second


def test_a_dead_holder_on_this_host_is_taken_over_at_once(backend: Backend) -> None:
    printed = in_subprocess(backend, "lease = journal.acquire_lease('p', 3600); print(lease.token, lease.pid)")
    token, pid = (int(x) for x in printed.split())
    assert pid != os.getpid()
    journal = backend.open()
    assert journal.lease_of("p") is None and journal.live_leases() == {}  # the holder is known dead
    lease = leased(journal, "p")  # long before its expiry
    assert lease.token == token + 1 and lease.pid == os.getpid()


def test_a_holder_on_another_host_is_taken_over_only_after_expiry(backend: Backend) -> None:
    # The subprocess says it runs on another host; its pid is dead once it exits, but from here that cannot be
    # known (that pid would be on the other machine): only expiry frees the lease.
    printed = in_subprocess(
        backend, "lease = journal.acquire_lease('p', 2.0); print(lease.token)", ROTATOR_HOST_ID="other-host"
    )
    journal = backend.open()
    assert journal.acquire_lease("p", 60) is None
    held = journal.lease_of("p")
    assert held is not None and held.host == "other-host" and held.token == int(printed)
    lease = wait_for(lambda: journal.acquire_lease("p", 60), "the other host's lease to expire")
    assert datetime.now(UTC) >= held.expires_at and lease.token == held.token + 1


def test_a_holder_that_lost_its_lease_cannot_write(backend: Backend) -> None:
    old_journal, new_journal = backend.open(), backend.open()
    old = leased(old_journal, "p", ttl=0)  # expires at once: the next acquire takes it over
    old_journal.begin_run(make_run("r1"), old)
    old_journal.step_started("r1", Step.CREATE, "forward", old)
    before = old_journal.get_run("r1")

    new = leased(new_journal, "p")
    assert new.token == old.token + 1
    attempts: list[Callable[[], Any]] = [
        lambda: old_journal.step_finished("r1", Step.CREATE, "forward", old),
        lambda: old_journal.step_started("r1", Step.STAGE, "forward", old),
        lambda: old_journal.update_run("r1", old, state=RunState.AWAITING_REVOKE),
        lambda: old_journal.save_notification(NotificationRecord("r1", "p", "ops", NotifyStatus.SUCCEEDED), old),
        lambda: old_journal.begin_run(make_run("r2"), old),
        lambda: old_journal.renew_lease(old, 60),
    ]
    for attempt in attempts:
        with pytest.raises(LeaseLost, match="plan p"):
            attempt()
    old_journal.release_lease(old)
    assert new_journal.get_run("r1") == before
    assert new_journal.get_run("r2") is None and new_journal.notifications() == []
    assert new_journal.lease_of("p") == new
    new_journal.step_finished("r1", Step.CREATE, "forward", new)  # the new holder writes on
    new_journal.update_run("r1", new, state=RunState.ROLLED_BACK)
    got = new_journal.get_run("r1")
    assert got is not None and got.state is RunState.ROLLED_BACK and got.steps[0].status == "succeeded"


def test_threads_racing_for_one_plan_one_wins_each_round(backend: Backend) -> None:
    journals = [backend.open(), backend.open()]  # each shared by four threads, as a daemon's pool shares one
    threads, rounds = 8, 15
    barrier = threading.Barrier(threads)
    won: list[list[int]] = [[] for _ in range(rounds)]
    errors: list[BaseException] = []

    def contender(index: int) -> None:
        journal = journals[index % 2]
        try:
            for round_no in range(rounds):
                barrier.wait()
                lease = journal.acquire_lease("race", 60)
                if lease:
                    won[round_no].append(lease.token)
                barrier.wait()
                if lease:
                    journal.release_lease(lease)
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    workers = [threading.Thread(target=contender, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors, errors
    assert [len(w) for w in won] == [1] * rounds
    tokens = [w[0] for w in won]
    assert tokens == sorted(set(tokens))


def test_threads_write_their_runs_concurrently(backend: Backend) -> None:
    journal = backend.open()
    threads, runs_each = 8, 6
    errors: list[BaseException] = []

    def rotate(index: int) -> None:
        try:
            plan = f"plan{index}"
            for run_no in range(runs_each):
                lease = leased(journal, plan)
                run_id = f"{plan}-{run_no}"
                journal.begin_run(make_run(run_id, plan), lease)
                for step in (Step.CREATE, Step.STAGE, Step.TEST, Step.PROMOTE):
                    journal.step_started(run_id, step, "forward", lease)
                    journal.step_finished(run_id, step, "forward", lease)
                journal.update_run(run_id, lease, state=RunState.SUCCEEDED, ended_at=datetime.now(UTC))
                journal.release_lease(lease)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=rotate, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors, errors
    latest = journal.latest_runs()
    assert {p: r.run_id for p, r in latest.items()} == {f"plan{i}": f"plan{i}-{runs_each - 1}" for i in range(threads)}
    assert all(r.state is RunState.SUCCEEDED for r in latest.values())
    assert len(journal.runs_in_state(RunState.SUCCEEDED)) == threads * runs_each
    assert all(len(r.steps) == 4 for r in journal.runs(limit=1000))


def _race_worker(url: str, tmp: str, rounds: int, barrier: Any, results: Any) -> None:
    """One process of test_processes_racing_for_one_plan_one_wins_each_round."""
    journal = open_journal(url, Path(tmp))
    try:
        for round_no in range(rounds):
            barrier.wait()
            lease = journal.acquire_lease("race", 60)
            results.put((round_no, os.getpid(), lease.token if lease else None))
            barrier.wait()
            if lease:
                journal.release_lease(lease)
            barrier.wait()
    finally:
        journal.close()


def _open_worker(url: str, tmp: str, barrier: Any, results: Any) -> None:
    """One process of test_schema_creation_racing_from_several_processes."""
    barrier.wait()
    try:
        journal = open_journal(url, Path(tmp))
        lease = journal.acquire_lease(f"plan-{os.getpid()}", 60)
        assert lease is not None
        journal.begin_run(make_run(f"run-{os.getpid()}", lease.plan_id), lease)
        journal.close()
        results.put((os.getpid(), "ok"))
    except BaseException as exc:
        results.put((os.getpid(), f"{type(exc).__name__}: {exc}"))


def _run_processes(target: Callable[..., None], args: tuple[Any, ...], count: int) -> list[Any]:
    # fork: the workers start in milliseconds; the parent holds no journal connection yet when it forks.
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(count, timeout=60)
    results = context.Queue()
    procs = [context.Process(target=target, args=(*args, barrier, results)) for _ in range(count)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * count
    found = []
    while not results.empty():
        found.append(results.get(timeout=5))
    return found


def test_processes_racing_for_one_plan_one_wins_each_round(backend: Backend) -> None:
    processes, rounds = 4, 8
    results = _run_processes(_race_worker, (backend.url, str(backend.tmp), rounds), processes)
    assert len(results) == processes * rounds
    tokens = []
    for round_no in range(rounds):
        winners = [token for r, _pid, token in results if r == round_no and token is not None]
        assert len(winners) == 1, f"round {round_no}: {winners}"
        tokens.append(winners[0])
    assert tokens == sorted(set(tokens))


def test_schema_creation_racing_from_several_processes(backend: Backend) -> None:
    # SQLite: switching a new file to WAL answers "locked" at once when another process opens it too (about 1 run
    # in 40 failed before SqliteJournal retried it).
    processes = 4
    results = _run_processes(_open_worker, (backend.url, str(backend.tmp)), processes)
    assert sorted(outcome for _pid, outcome in results) == ["ok"] * processes
    journal = backend.open()
    assert len(journal.runs()) == processes
    if backend.kind == "postgres":
        with backend.admin() as conn:
            # every migration applied once, however many processes raced to apply it
            assert conn.execute("SELECT version FROM rotator_schema_version ORDER BY version").fetchall() == [
                (1,),
                (2,),
            ]


# -- secrets ----------------------------------------------------------------------------------------------------


def test_free_text_is_scrubbed_of_known_secrets(backend: Backend) -> None:
    secret = f"hunter2-{uuid.uuid4().hex}"
    register_secret(secret)
    journal = backend.open()
    lease = leased(journal, "p")
    journal.begin_run(make_run("r1", reason=f"leak of {secret}", details={"note": f"saw {secret}"}), lease)
    journal.step_started("r1", Step.STAGE, "forward", lease)
    journal.step_finished("r1", Step.STAGE, "forward", lease, error=f"login failed with {secret}")
    journal.update_run("r1", lease, error=f"stuck: {secret}")
    journal.save_notification(NotificationRecord("r1", "p", "ops", NotifyStatus.FAILED, last_error=secret), lease)
    shown = repr(journal.get_run("r1")) + repr(journal.notifications())
    assert secret not in shown and REDACTED in shown
    assert secret not in stored_text(backend, journal)


# -- the engine on both journals --------------------------------------------------------------------------------


def drive_the_engine(backend: Backend, workdir: Path) -> list[Any]:
    """Rotations by the real Runner over an in-process target: one awaiting revoke, its revoke, one rolled back.
    Checks that no password the target or the store knew reached the journal; returns the plan's history as
    (state, steps) newest first."""
    from rotator.components import ComponentSetup
    from rotator.engine.runner import BoundPlan, Runner
    from rotator.errors import StepError
    from rotator.local_store import LocalStore, create_key_file
    from rotator.model import Stage
    from tests.unit.fake_target import FakePlugin, FakeTarget

    workdir.mkdir()
    create_key_file(workdir / "store.key")
    store = LocalStore({}, ComponentSetup(name="local", config_dir=workdir, state_dir=workdir))
    target = FakeTarget()
    first = f"first-{uuid.uuid4().hex}"
    store.put_current("app/db", {"username": "app", "password": first})
    target.accepted["app"] = {first}
    plan = BoundPlan(
        plan_id="p1", secret_id="app/db", store_name="local", store=store, plugin=FakePlugin(target),
        strategy="alternating-users", grace=timedelta(hours=1),
    )  # fmt: skip
    journal = backend.open()
    try:
        rotated = Runner(journal).rotate(plan)
        later = Runner(journal, clock=lambda: datetime.now(UTC) + timedelta(hours=2))
        [revoked] = later.revoke_due(plan)
        target.fail["test"] = StepError("probe failed")
        failed = Runner(journal).rotate(plan)
        passwords = [first, *(c["password"] for c in (store.get("app/db", s) for s in Stage) if c is not None)]
        passwords += [p for accepted in target.accepted.values() for p in accepted]
    finally:
        store.close()
    assert (rotated.outcome, revoked.outcome, failed.outcome) == ("awaiting_revoke", "succeeded", "rolled_back")
    success = journal.last_success("p1")
    assert success is not None and success.run_id == rotated.run_id
    assert journal.latest_runs()["p1"].run_id == failed.run_id and journal.live_leases() == {}
    history = [(r.state, [(s.step, s.action, s.status, s.error) for s in r.steps]) for r in journal.runs("p1")]
    dump = stored_text(backend, journal)
    assert rotated.run_id in dump and not [p for p in passwords if p in dump]  # no password reached the journal
    return history


def test_the_engine_records_the_same_history_on_either_journal(pg_backend: Backend, tmp_path: Path) -> None:
    sqlite_backend = Backend("sqlite", f"sqlite:///{tmp_path / 'journal.db'}", tmp_path)
    try:
        on_sqlite = drive_the_engine(sqlite_backend, tmp_path / "sqlite-store")
    finally:
        for journal in sqlite_backend.opened:
            journal.close()
    on_postgres = drive_the_engine(pg_backend, tmp_path / "pg-store")
    assert on_postgres == on_sqlite
    assert [state for state, _steps in on_postgres] == [RunState.ROLLED_BACK, RunState.SUCCEEDED]


def stored_text(backend: Backend, journal: Journal) -> str:
    """Everything the journal holds, as text: the tables (PostgreSQL) or the database files (SQLite)."""
    if backend.kind == "postgres":
        with backend.admin() as conn:
            row = conn.execute(
                "SELECT concat_ws(' ', (SELECT json_agg(r)::text FROM rotator_runs r), "
                "(SELECT json_agg(s)::text FROM rotator_steps s), "
                "(SELECT json_agg(n)::text FROM rotator_notifications n), "
                "(SELECT json_agg(l)::text FROM rotator_leases l))"
            ).fetchone()
        assert row is not None
        return str(row[0])
    journal.close()
    return b"".join(p.read_bytes() for p in sorted(backend.tmp.glob("journal.db*"))).decode("latin-1")


# -- PostgreSQL only ----------------------------------------------------------------------------------------------


@pytest.fixture
def pg_backend(
    pg_server: PgServer, pg_roles: PgRoles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    dbname = fresh_database(pg_server)
    monkeypatch.setenv("PGPASSWORD", pg_roles.owner_password)
    made = Backend("postgres", pg_url(pg_server, OWNER, dbname), tmp_path, pg=pg_server, dbname=dbname)
    yield made
    for journal in made.opened:
        journal.close()


def rotator_backends(backend: Backend, waiting: bool = False) -> list[tuple[int, str | None]]:
    """(pid, wait_event_type) of the journal's connections to the test database."""
    with backend.admin() as conn:
        return conn.execute(
            "SELECT pid, wait_event_type FROM pg_stat_activity WHERE datname = %s AND application_name = 'rotator'"
            + (" AND wait_event_type = 'Lock'" if waiting else ""),
            (backend.dbname,),
        ).fetchall()


def drop_connections(backend: Backend) -> None:
    """Terminate the journal's connections to the test database (as a server restart or a proxy would)."""
    with backend.admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'rotator'",
            (backend.dbname,),
        )
    wait_for(lambda: not rotator_backends(backend), "the journal's connections to end")


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_a_fenced_write_that_waited_for_a_takeover_is_refused(pg_backend: Backend) -> None:
    """The fence reads the lease row FOR SHARE in the write's own statement: a takeover in flight makes the write
    wait, and once the takeover commits the write finds its token gone, instead of slipping in after it."""
    journal = pg_backend.open()
    lease = leased(journal, "p")
    journal.begin_run(make_run("r1"), lease)
    with pg_backend.admin() as admin, admin.transaction():
        admin.execute(
            "UPDATE rotator_leases SET token = token + 1, holder = 'other-host:1:1', host = 'other-host', pid = 1 "
            "WHERE plan_id = 'p'"
        )
        thread, errors = in_thread(lambda: journal.step_started("r1", Step.STAGE, "forward", lease))
        wait_for(lambda: rotator_backends(pg_backend, waiting=True), "the write to wait for the takeover's lock")
    thread.join(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], LeaseLost)
    got = journal.get_run("r1")
    assert got is not None and got.steps == ()


def test_idle_connections_the_server_dropped_are_replaced(pg_backend: Backend) -> None:
    journal = pg_backend.open()
    lease = leased(journal, "p")
    drop_connections(pg_backend)
    journal.begin_run(make_run("r1"), lease)  # a write on a fresh connection: nothing lost, no error
    got = journal.get_run("r1")
    assert got is not None and got.plan_id == "p"


def test_a_dropped_connection_is_noticed_by_reads_and_writes(
    pg_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the drop is not seen before use (the server's goodbye not yet arrived), a read is repeated on a new
    connection, and a write raises TransientError: it may have committed or not, so it is never repeated blindly."""
    import rotator.journal.postgres as module

    journal = pg_backend.open()
    lease = leased(journal, "p")
    journal.begin_run(make_run("r1"), lease)
    monkeypatch.setattr(module, "_server_closed", lambda conn: False)

    drop_connections(pg_backend)
    got = journal.get_run("r1")
    assert got is not None and got.run_id == "r1"
    drop_connections(pg_backend)
    with pytest.raises(TransientError, match="may or may not have been saved"):
        journal.step_started("r1", Step.CREATE, "forward", lease)
    journal.step_started("r1", Step.CREATE, "forward", lease)  # the next write gets a new connection
    got = journal.get_run("r1")
    assert got is not None and len(got.steps) == 1


def test_a_write_cut_off_midway_raises_transient_error_and_saves_nothing(pg_backend: Backend) -> None:
    journal = pg_backend.open()
    lease = leased(journal, "p")
    journal.begin_run(make_run("r1"), lease)
    with pg_backend.admin() as admin, admin.transaction():
        admin.execute("LOCK TABLE rotator_steps IN ACCESS EXCLUSIVE MODE")
        thread, errors = in_thread(lambda: journal.step_started("r1", Step.CREATE, "forward", lease))
        (pid, _wait), *_ = wait_for(lambda: rotator_backends(pg_backend, waiting=True), "the write to block")
        with pg_backend.admin() as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        thread.join(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], TransientError), errors
    assert "may or may not have been saved" in str(errors[0])
    got = journal.get_run("r1")
    assert got is not None and got.steps == ()  # cut off before commit: nothing, and the caller was told
    journal.step_started("r1", Step.CREATE, "forward", lease)
    got = journal.get_run("r1")
    assert got is not None and len(got.steps) == 1


def test_a_statement_waiting_too_long_is_a_transient_error(pg_backend: Backend) -> None:
    """statement_timeout (30 s by default, here 300 ms from the URL's libpq `options`) bounds a lock wait."""
    url = pg_backend.url + "&options=-c%20statement_timeout%3D300"
    journal = open_journal(url, pg_backend.tmp)
    pg_backend.opened.append(journal)
    lease = leased(journal, "p")
    journal.begin_run(make_run("r1"), lease)
    with pg_backend.admin() as admin, admin.transaction():
        admin.execute("LOCK TABLE rotator_steps IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(TransientError, match="statement timeout"):
            journal.step_started("r1", Step.CREATE, "forward", lease)
    with pg_backend.admin() as admin:
        assert admin.execute("SELECT count(*) FROM rotator_steps").fetchone() == (0,)
    default = pg_backend.open()
    assert default.get_run("r1") is not None
    with pg_backend.admin() as admin:
        settings = admin.execute("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'").fetchone()
    assert settings == ("0",)  # the server's default is untouched: the journal sets its own sessions only


def test_a_server_restart_raises_transient_errors_then_the_journal_reconnects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PgServer.start()  # its own server: this test stops it
    try:
        password = uuid.uuid4().hex
        server.make_role(OWNER, password)
        dbname = fresh_database(server)
        monkeypatch.setenv("PGPASSWORD", password)
        journal = open_journal(pg_url(server, OWNER, dbname, "&connect_timeout=3"), tmp_path)
        try:
            lease = leased(journal, "p")
            server._run(str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-m", "fast", "-w", "stop")
            with pytest.raises(TransientError) as down:
                journal.begin_run(make_run("r1"), lease)
            with pytest.raises(TransientError):
                journal.get_run("r1")
            assert password not in str(down.value) and str(server.port) in str(down.value)
            # The server's goodbye was seen before use: nothing was sent, so nothing is in doubt.
            assert "may or may not" not in str(down.value)
            server._pg_ctl_start(())
            journal.begin_run(make_run("r1"), lease)
            assert journal.lease_of("p") == lease and journal.get_run("r1") is not None
        finally:
            journal.close()
    finally:
        server.stop()


def test_logins_use_the_environment_never_the_url(
    pg_server: PgServer, pg_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    since = pg_server.log_size()
    journal = pg_backend.open()
    lease = leased(journal, "p")
    journal.begin_run(make_run("r1"), lease)
    log = pg_server.log_text(since)
    assert "rotator_leases" in log  # the server logged our statements...
    assert os.environ["PGPASSWORD"] not in log  # ...and never the password (SCRAM sends a proof, not it)

    monkeypatch.setenv("PGPASSWORD", "wrong-password-123")
    with pytest.raises(ConfigError, match="refused the login") as refused:
        open_journal(pg_backend.url, pg_backend.tmp)
    assert "wrong-password-123" not in str(refused.value) and "PGPASSWORD" in str(refused.value)

    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", str(pg_backend.tmp / "none"))
    with pytest.raises(ConfigError, match="refused the login"):
        open_journal(pg_backend.url, pg_backend.tmp)

    url_with_password = pg_backend.url.replace(f"{OWNER}@", f"{OWNER}:s3cret-in-url@")
    with pytest.raises(ConfigError, match="holds a password") as in_url:
        open_journal(url_with_password, pg_backend.tmp)
    assert "s3cret-in-url" not in str(in_url.value)


def test_the_documented_grants_are_enough_once_the_tables_exist(
    pg_server: PgServer, pg_roles: PgRoles, pg_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_url = pg_url(pg_server, APP, pg_backend.dbname or "", "&schema=rotator")
    monkeypatch.setenv("PGPASSWORD", pg_roles.app_password)
    with pytest.raises(ConfigError, match="permission denied") as denied:
        open_journal(app_url, pg_backend.tmp)  # no CREATE: it cannot make the tables
    assert "GRANT" in str(denied.value).upper() or "grant" in str(denied.value)

    monkeypatch.setenv("PGPASSWORD", pg_roles.owner_password)
    owner_journal = open_journal(pg_url(pg_server, OWNER, pg_backend.dbname or "", "&schema=rotator"), pg_backend.tmp)
    owner_journal.close()
    with pg_backend.admin() as admin:
        admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(OWNER)))  # the grants README documents:
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA rotator TO {}").format(sql.Identifier(APP)))
        admin.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA rotator TO {}").format(sql.Identifier(APP))
        )
        tables = admin.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables WHERE table_name LIKE 'rotator%%' "
            "GROUP BY table_schema"
        ).fetchall()
    assert tables == [("rotator", 6)]  # all in the schema the URL named, none in public

    monkeypatch.setenv("PGPASSWORD", pg_roles.app_password)
    journal = open_journal(app_url, pg_backend.tmp)
    try:
        lease = leased(journal, "p")
        journal.begin_run(make_run("r1"), lease)
        journal.step_started("r1", Step.CREATE, "forward", lease)
        journal.step_finished("r1", Step.CREATE, "forward", lease)
        journal.update_run("r1", lease, state=RunState.SUCCEEDED, details={"ok": True})
        journal.save_notification(NotificationRecord("r1", "p", "ops", NotifyStatus.SUCCEEDED), lease)
        journal.save_notification(NotificationRecord("r1", "p", "ops", NotifyStatus.SUCCEEDED), lease)
        journal.save_fingerprints([Fingerprint("p", "s", "r1", "secret", "ab" * 16)])
        assert journal.find_fingerprints(["ab" * 16]) == [Fingerprint("p", "s", "r1", "secret", "ab" * 16)]
        journal.renew_lease(lease, 60)
        journal.release_lease(lease)
        assert journal.latest_runs()["p"].state is RunState.SUCCEEDED and journal.last_successes()
        assert journal.live_leases() == {} and len(journal.notifications()) == 1
    finally:
        journal.close()


def test_a_newer_schema_is_refused(pg_backend: Backend) -> None:
    pg_backend.open().close()
    with pg_backend.admin() as admin:
        admin.execute("INSERT INTO rotator_schema_version (version) VALUES (99)")
    with pytest.raises(ConfigError, match="schema version 99"):
        pg_backend.open()


def test_open_journal_names_the_missing_driver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delitem(sys.modules, "rotator.journal.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(ConfigError, match="psycopg") as missing:
        open_journal("postgresql://rotator@db.example/rotator", tmp_path)
    assert missing.value.key == "rotator.journal"
    with pytest.raises(ConfigError, match="unknown journal URL scheme"):
        open_journal("mysql://rotator@db/rotator", tmp_path)


def test_bad_journal_urls_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schema") as bad_schema:
        open_journal("postgresql://rotator@db.example/rotator?schema=Robert';drop", tmp_path)
    assert bad_schema.value.key == "rotator.journal"
    with pytest.raises(ConfigError, match="not a valid PostgreSQL URL"):
        open_journal("postgresql://rotator@db.example/rotator?colour=blue", tmp_path)


def test_the_suite_logs_in_with_a_checked_password(pg_server: PgServer, pg_roles: PgRoles) -> None:
    """Guard for the suite itself: the owner's password really is checked over TCP (a wrong one fails)."""
    assert pg_server.can_login(OWNER, pg_roles.owner_password)
    assert not pg_server.can_login(OWNER, pg_roles.owner_password + "x")
