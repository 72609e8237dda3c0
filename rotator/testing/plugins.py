"""The plugin contract: what the engine relies on from every RotationPlugin, checked through the real engine.

Each check drives the real `Runner` with an embedded `LocalStore` and `SqliteJournal` in a scratch directory, a
`RecordingNotifier`, and your plugin against your target (a real server where one can be had), and asserts
DESIGN.md's invariants after every scenario:

1. after a run ends (succeeded, rolled back, or crashed and resumed) the store's CURRENT authenticates;
2. no credential is valid at the target unless the store holds it: every value the plugin's `create` returned
   (and the seeded one) that the store no longer holds must not authenticate, and the harness's `unknown_valid`
   (keys the provider lists that the store does not hold) must be empty;
3. a consumer reading the store's default never sees a PENDING value (read at every failpoint the run passes);
4. one run per plan: a second rotation while one holds the lease raises PlanBusy;
5. every step is idempotent: each plugin method called twice converges, and a crash at EVERY failpoint
   (rotator/failpoints.py, action `abort`) followed by `Runner.resume` with new objects converges;
6. no secret value in the logs (structlog at debug, and the stdlib loggers), the journal and every other file
   the run wrote, exception texts, notification payloads, or (when the harness offers it) the target's own log.

Failures are injected at every failpoint with action `error` (the engine rolls back, or records a failed
revoke and retries it later) and `abort` (SimulatedCrash: an in-process kill -9). The scenarios are derived from
`rotator.failpoints.POINTS`, so a new failpoint gets its scenarios without an edit here. One more scenario loses
the journal after a crash (a power cut): `resume` must roll back the PENDING no run claims.

The checks: `check_full_rotation`, `check_methods_idempotent`, `check_one_run_per_plan`, `check_lost_journal`,
`check_no_secret_leaks`, `check_errors_carry_no_secret` (each per strategy), and `check_failure_rolls_back` /
`check_crash_then_resume` per strategy and `Fault` (`FAULTS`; `expected_end` says how each must end).

How to run it over your plugin. Write a harness, a `PluginHarness` subclass that knows your target::

    class MyApiHarness(PluginHarness):
        name = "my-api"
        plugin_type = "my-api"                     # your entry point in rotator.plugins
        strategies = ("single-user",)

        def __init__(self, server):                # a test server or an HTTP fake of the vendor's API
            self.server = server

        def plugin_options(self, strategy):
            return {"base_url": self.server.url, "ca_bundle": self.server.ca}

        def seed(self, strategy):                  # a fresh credential that works at the target now
            return self.server.new_key()

        def authenticates(self, value):            # does this value log in at the target NOW?
            return self.server.key_is_live(value["key_id"], value["secret"])

        def unknown_valid(self, seeded, known):    # live keys of this account that no stored value holds
            ids = {v["key_id"] for v in known}
            return [k for k in self.server.live_keys(seeded["account"]) if k not in ids]

Then either subclass `PluginContract` (name it Test..., set `strategies`, give it a `plugin_harness` fixture)::

    class TestMyApi(PluginContract):
        strategies = MyApiHarness.strategies

        @pytest.fixture
        def plugin_harness(self, my_api_server):
            return MyApiHarness(my_api_server)

or call `run_plugin_contract(harness, workdir)` (or any `check_*`) from a script. A provider that invalidates
the old key when it mints the new one (Cloudflare's token roll) sets `rolls_forward = True` on the plugin: the
kit then expects such a run to finish forward (on resume), or to stop stuck with PENDING kept, never to end with no
valid credential stored.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from rotator import failpoints
from rotator.components import ComponentSetup
from rotator.engine.runner import BoundPlan, Runner, RunOutcome, utc_now
from rotator.errors import PlanBusy, RotatorError, SecretNotFound
from rotator.failpoints import POINTS, SimulatedCrash
from rotator.interfaces import Reconciler, RotationPlugin
from rotator.journal.sqlite import SqliteJournal
from rotator.local_store import LocalStore, create_key_file
from rotator.logs import configure as configure_logs
from rotator.logs import scrub
from rotator.model import (
    Credential,
    PasswordPolicy,
    RotationContext,
    RunRecord,
    RunState,
    Stage,
    sensitive_strings,
)
from rotator.registry import load_plugin
from rotator.testing.notifiers import RecordingNotifier

__all__ = [
    "CONTRACT_SECRET_ID",
    "FAULTS",
    "PLUGIN_CHECKS",
    "End",
    "Fault",
    "PluginContract",
    "PluginHarness",
    "captured_logs",
    "check_crash_then_resume",
    "check_errors_carry_no_secret",
    "check_failure_rolls_back",
    "check_full_rotation",
    "check_lost_journal",
    "check_methods_idempotent",
    "check_no_secret_leaks",
    "check_one_run_per_plan",
    "expected_end",
    "run_plugin_contract",
]

CONTRACT_SECRET_ID = "contract/plugin"  # noqa: S105 (a secret id, not a secret)
NOTIFIER = "recorder"
# Far enough ahead that every grace period and every revoke retry delay (at most an hour) has passed.
LATER = timedelta(hours=3)


# -- the harness ------------------------------------------------------------------------------------------------


class PluginHarness:
    """What the kit needs to know about your plugin and its target. Subclass it; override what your plugin needs.

    Must override: `seed`, `authenticates`, and either `plugin_type` (the entry point name, loaded through the
    registry as a config would load it) or `make_plugin`. The rest has defaults.

    A base class rather than a Protocol: most parts have sensible defaults, and a harness usually holds state
    (the test server, an admin connection) that its methods share.
    """

    name: str = "plugin"
    plugin_type: str | None = None
    strategies: tuple[str, ...] = ("single-user",)
    # False for a secret with no target system (a signing key): then nothing can "stop working" at a target,
    # and the kit skips the checks that need one (a value the store dropped must no longer authenticate).
    has_target: bool = True
    password_policy: PasswordPolicy = PasswordPolicy()

    def plugin_options(self, strategy: str) -> dict[str, Any]:
        """The plugin's options for a plan with this strategy (its table in the config, minus `type`)."""
        return {}

    def make_plugin(self, strategy: str, setup: ComponentSetup) -> RotationPlugin:
        """A new plugin object. The kit calls it again for every simulated process restart."""
        if self.plugin_type is None:
            raise NotImplementedError(f"{type(self).__name__}: set plugin_type or override make_plugin")
        return load_plugin(self.plugin_type, self.plugin_options(strategy), setup, "plans[0].plugin")

    def seed(self, strategy: str) -> dict[str, Any]:
        """A fresh secret value that authenticates at the target now (a new role, user or key for this call
        alone: scenarios must not share a credential). If it names other secrets (``masterarn``), return them
        from `other_secrets`."""
        raise NotImplementedError

    def other_secrets(self, strategy: str, seeded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Other secrets the plan's store must hold (secret id -> value), e.g. the admin secret `masterarn` names."""
        return {}

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        """Whether this secret value logs in at the target NOW. Only a refusal is False; other errors raise."""
        raise NotImplementedError

    def unknown_valid(self, seeded: Mapping[str, Any], known: Sequence[Mapping[str, Any]]) -> list[str]:
        """Credentials of the seeded account that are valid at the target and held by none of `known` (the store's
        CURRENT, PENDING and PREVIOUS now), as public ids. Needed where the provider mints keys the kit may never
        see (a key minted just before a crash). The kit itself checks every value it did see (the seed and every
        `create` result) with `authenticates`, so a database plugin, whose passwords are generated and stored
        before they are applied, may leave this empty: a password no value holds is one nobody knows (a revoked
        alternating user's)."""
        return []

    def previous_still_valid_during_grace(self, strategy: str) -> bool:
        """Whether PREVIOUS still authenticates between promote and revoke (False for a single-user database
        role, whose old password stops at stage)."""
        return True

    def revoke_invalidates_previous(self, strategy: str) -> bool:
        """Whether PREVIOUS stops authenticating once revoked (False where there is no target)."""
        return self.has_target

    def refused_value(self, seeded: Mapping[str, Any]) -> dict[str, Any]:
        """A value the target must refuse: by default the seed with every secret string replaced by a new random
        one. Override where the credential's public id alone decides (a provider that ignores the secret)."""
        hidden = set(sensitive_strings(seeded))
        return {k: (secrets.token_urlsafe(24) if isinstance(v, str) and v in hidden else v) for k, v in seeded.items()}

    def target_log_mark(self) -> int:
        """A position in the target's own log (a server's statement log), or 0 when there is none."""
        return 0

    def target_log_since(self, mark: int) -> str:
        """What the target logged since `mark` (checked for secrets), or "" when there is no such log."""
        return ""

    def cleanup(self, seeded: Mapping[str, Any]) -> None:
        """Remove what `seed` made (roles, users, keys), after each scenario."""


# -- failpoint scenarios -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """A failure at one failpoint: `action` is `error` or `abort`; `trigger` is another failpoint armed with
    `error` first, for points that only a rollback passes."""

    point: str
    action: str
    trigger: str | None = None

    @property
    def id(self) -> str:
        return f"{self.action}:{self.point}"

    @property
    def spec(self) -> str:
        """The ROTATOR_FAILPOINTS value that arms it."""
        armed = [f"{self.point}={self.action}"]
        if self.trigger:
            armed.insert(0, f"{self.trigger}=error")
        return ",".join(armed)

    @property
    def in_rollback(self) -> bool:
        return self.trigger is not None

    @property
    def after_notify_started(self) -> bool:
        """The point lies after promote and notify began: the new credential was announced."""
        return self.point.endswith(("-notify", "-revoke"))


def _trigger_for(point: str) -> str | None:
    if "unpromote" in point:
        return "after-store-promote"  # a failure right after the store's promote makes the run unpromote
    if "rollback" in point or "discard-pending" in point:
        return "after-test"  # a failure before promote makes the run unstage and discard
    return None


FAULTS: tuple[Fault, ...] = tuple(
    Fault(point, action, _trigger_for(point)) for action in ("error", "abort") for point in POINTS
)


@dataclass(frozen=True)
class End:
    """How a scenario must end: the first call's outcome, and the run's state once settled."""

    first: str
    final: RunState


def expected_end(fault: Fault) -> End:
    """The end a plugin that does not roll forward must reach (the engine's contract, per DESIGN.md).

    error: before notify a failure rolls back; a failing notify never rolls back (the credential is live and
    announced); a failing revoke is recorded and retried later; a failure inside a rollback leaves the run stuck
    until `resume`. abort: resume repeats the step in flight and finishes (revoking at once, as the crashed run
    was asked to), or goes on rolling back.
    """
    if fault.action == "abort":
        return End("crashed", RunState.ROLLED_BACK if fault.in_rollback else RunState.SUCCEEDED)
    if fault.in_rollback:
        return End(RunState.STUCK.value, RunState.ROLLED_BACK)
    if fault.point.endswith("-revoke"):
        return End(RunState.AWAITING_REVOKE.value, RunState.SUCCEEDED)
    if fault.point.endswith("-notify"):
        return End(RunState.SUCCEEDED.value, RunState.SUCCEEDED)
    return End(RunState.ROLLED_BACK.value, RunState.ROLLED_BACK)


# -- capturing what could leak -----------------------------------------------------------------------------------


class _ListHandler(logging.Handler):
    def __init__(self, sink: io.StringIO) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.sink.write(f"{record.name} {record.levelname} {text}\n")


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Everything logged while inside: structlog at debug (JSON lines, the daemon's format, with the redaction
    processor), and stdlib logging: the project's and plugins' loggers at debug, other libraries' at warning."""
    sink = io.StringIO()
    saved = structlog.get_config()
    handler = _ListHandler(sink)
    handler.addFilter(lambda r: r.name.startswith("rotator") or r.levelno >= logging.WARNING)
    root = logging.getLogger()
    ours = [logging.getLogger(name) for name in ("rotator", "rotator_plugins")]
    levels = [logger.level for logger in ours]
    configure_logs(json=True, level="debug", stream=sink)
    root.addHandler(handler)
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    try:
        yield sink
    finally:
        root.removeHandler(handler)
        for logger, level in zip(ours, levels, strict=True):
            logger.setLevel(level)
        structlog.configure(**saved)


def _twice(method: str, call: Callable[[], object]) -> None:
    """Call a plugin method twice in a row, as the engine does when it repeats a step after a crash."""
    call()
    try:
        call()
    except Exception as exc:
        raise AssertionError(
            f"invariant 5: {method} is not idempotent: called again it raised {type(exc).__name__}: "
            + scrub(str(exc).splitlines()[0] if str(exc) else "")
        ) from exc


def _exception_text(exc: BaseException) -> str:
    """An exception as a traceback would show it: its message, repr, and every chained cause's."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


# -- one scenario's rig ------------------------------------------------------------------------------------------


@dataclass
class _Observation:
    point: str
    current: Credential | None
    pending_version: str | None


@dataclass
class _Rig:
    """The engine's parts for one scenario, over files in `workdir`, and what the kit saw while it ran."""

    harness: PluginHarness
    strategy: str
    workdir: Path
    seeded: dict[str, Any]
    others: dict[str, dict[str, Any]]
    store: LocalStore
    journal: SqliteJournal
    consumer: LocalStore  # a consumer's own store object (another process, reading the default)
    plugin: RotationPlugin
    start_version: str
    log_mark: int
    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)
    created: list[dict[str, Any]] = field(default_factory=list)  # every value `create` returned
    seen_values: list[dict[str, Any]] = field(default_factory=list)  # every value the store held
    texts: list[str] = field(default_factory=list)  # exception texts and outcomes, checked for secrets
    observations: list[_Observation] = field(default_factory=list)
    promoted: set[str] = field(default_factory=set)
    closed: list[Any] = field(default_factory=list)

    @property
    def plan_id(self) -> str:
        return f"contract-{self.harness.name}"

    @property
    def setup(self) -> ComponentSetup:
        return _plugin_setup(self.harness, self.workdir)

    @property
    def rolls_forward(self) -> bool:
        return self.bound().rolls_forward  # the engine's own reading of the plugin (and strategy)

    # -- building ---------------------------------------------------------------------------------------------

    def restart(self) -> None:
        """What a new process after a crash has: new store, journal and plugin objects over the same files."""
        self.closed += [self.store, self.journal]
        self.store = LocalStore({}, _store_setup(self.workdir))
        self.journal = SqliteJournal(self.workdir / "journal.db")
        self.plugin = _recording_plugin(self.harness, self.strategy, self.setup, self.created)

    def bound(self, grace: timedelta = timedelta(hours=1)) -> BoundPlan:
        return BoundPlan(
            plan_id=self.plan_id,
            secret_id=CONTRACT_SECRET_ID,
            store_name="local",
            store=self.store,
            plugin=self.plugin,
            strategy=self.strategy,
            grace=grace,
            options=self.harness.plugin_options(self.strategy),
            password_policy=self.harness.password_policy,
            notifiers=((NOTIFIER, self.notifier),),
            tags=("contract",),
        )

    def runner(self, *, later: bool = False) -> Runner:
        if later:
            return Runner(self.journal, clock=lambda: utc_now() + LATER, step_timeout=60)
        return Runner(self.journal, step_timeout=60)

    def context(self, run_id: str) -> RotationContext:
        """A context as the engine builds it, reading this rig's store."""

        def read_secret(secret_id: str) -> Credential:
            credential = self.store.get(secret_id, Stage.CURRENT)
            if credential is None:
                raise SecretNotFound(f"contract: secret {secret_id!r} has no CURRENT version")
            return credential

        return RotationContext(
            plan_id=self.plan_id,
            run_id=run_id,
            secret_id=CONTRACT_SECRET_ID,
            strategy=self.strategy,
            options=self.harness.plugin_options(self.strategy),
            password_policy=self.harness.password_policy,
            read_secret=read_secret,
            read_stage=lambda stage: self.store.get(CONTRACT_SECRET_ID, stage),
        )

    # -- reading ------------------------------------------------------------------------------------------------

    def stage(self, stage: Stage) -> Credential | None:
        credential = self.store.get(CONTRACT_SECRET_ID, stage)
        if credential is not None:
            self.seen_values.append(dict(credential.value))
        return credential

    def must(self, stage: Stage) -> Credential:
        credential = self.stage(stage)
        assert credential is not None, f"the store has no {stage.value} after the run"
        return credential

    def stored(self) -> list[Credential]:
        return [c for c in (self.stage(s) for s in (Stage.CURRENT, Stage.PENDING, Stage.PREVIOUS)) if c is not None]

    def last_run(self) -> RunRecord:
        runs = self.journal.runs(self.plan_id, limit=1)
        assert runs, "the journal recorded no run"
        return runs[0]

    def run(self, run_id: str) -> RunRecord:
        record = self.journal.get_run(run_id)
        assert record is not None, f"the journal lost run {run_id}"
        return record

    def open_runs(self) -> list[RunRecord]:
        return self.journal.runs_in_state(RunState.RUNNING, RunState.ROLLING_BACK, RunState.STUCK, plan_id=self.plan_id)

    def authenticates(self, value: Mapping[str, Any]) -> bool:
        return bool(self.harness.authenticates(value))

    # -- watching the engine ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def watching(self, also: Callable[[str], None] | None = None, arm: str | None = None) -> Iterator[list[str]]:
        """Observe the store as a consumer at every failpoint the engine passes (invariant 3), arm `arm`
        (a ROTATOR_FAILPOINTS value) meanwhile, and yield the names of the points that fired."""
        fired: list[str] = []
        real_hit = failpoints.hit

        def hit(name: str) -> None:
            fired.append(name)
            self.observe(name)
            if also is not None:
                also(name)
            real_hit(name)

        saved = os.environ.get("ROTATOR_FAILPOINTS")
        failpoints.hit = hit  # the engine calls failpoints.hit(...) through the module: this sees every point
        if arm:
            os.environ["ROTATOR_FAILPOINTS"] = arm
        try:
            yield fired
        finally:
            failpoints.hit = real_hit
            if saved is None:
                os.environ.pop("ROTATOR_FAILPOINTS", None)
            else:
                os.environ["ROTATOR_FAILPOINTS"] = saved

    def observe(self, point: str) -> None:
        current = self.consumer.get(CONTRACT_SECRET_ID, Stage.CURRENT)
        pending = self.consumer.get(CONTRACT_SECRET_ID, Stage.PENDING)
        if point == "after-store-promote" and current is not None:
            self.promoted.add(current.version_id)
        self.observations.append(_Observation(point, current, pending.version_id if pending else None))

    def rotate(self, bp: BoundPlan, **kwargs: Any) -> RunOutcome:
        outcome = self.runner().rotate(bp, **kwargs)
        self.record(outcome)
        return outcome

    def record(self, *outcomes: RunOutcome) -> None:
        for outcome in outcomes:
            self.texts.append(json.dumps(outcome.as_dict()))

    # -- the invariants -----------------------------------------------------------------------------------------

    def assert_consumer_never_saw_pending(self) -> None:
        """Invariant 3: at every point a consumer read only the value CURRENT at the start or a promoted one."""
        allowed = {self.start_version} | self.promoted
        for seen in self.observations:
            assert seen.current is not None, f"at {seen.point} a consumer found no CURRENT value"
            assert Stage.PENDING not in seen.current.stages, f"invariant 3: at {seen.point} CURRENT is PENDING"
            assert seen.current.version_id != seen.pending_version, (
                f"invariant 3: at {seen.point} a consumer's default read returned the PENDING version"
            )
            assert seen.current.version_id in allowed, (
                f"invariant 3: at {seen.point} a consumer read version {seen.current.version_id}, which was "
                "neither CURRENT at the start nor promoted"
            )

    def assert_invariants(self, *, pending_allowed: bool = False) -> None:
        """Invariants 1-3 once runs ended, and every run settled."""
        current = self.must(Stage.CURRENT)
        stuck = [r for r in self.open_runs() if r.state is RunState.STUCK]
        pending = self.stage(Stage.PENDING)
        if not pending_allowed:
            assert not self.open_runs(), f"runs left open: {[(r.run_id, r.state.value) for r in self.open_runs()]}"
            assert pending is None, "a PENDING version is left in the store after the runs ended"
        if pending_allowed and stuck and pending is not None and not self.authenticates(current.value):
            # A rolls-forward plugin's run stuck after create: the new credential is the valid one, kept as PENDING.
            assert self.authenticates(pending.value), "neither CURRENT nor the kept PENDING authenticates"
        else:
            assert self.authenticates(current.value), "invariant 1: the store's CURRENT does not authenticate"
        self.assert_nothing_unknown_valid()
        self.assert_consumer_never_saw_pending()

    def assert_nothing_unknown_valid(self) -> None:
        """Invariant 2: the target accepts no credential that the store does not hold."""
        stored = self.stored()
        held = [dict(c.value) for c in stored]
        if self.harness.has_target:
            for index, value in enumerate([self.seeded, *self.created]):
                if value not in held:
                    what = "the seeded value" if index == 0 else f"the value create returned (#{index})"
                    assert not self.authenticates(value), (
                        f"invariant 2: {what} still authenticates, but the store no longer holds it"
                    )
        unknown = self.harness.unknown_valid(self.seeded, held)
        assert not unknown, f"invariant 2: credentials valid at the target that the store does not hold: {unknown}"

    def secret_strings(self) -> set[str]:
        values = [self.seeded, *self.others.values(), *self.created, *self.seen_values]
        return {s for value in values for s in sensitive_strings(value)}

    def assert_no_secret_leaked(self, logs: io.StringIO) -> None:
        """Invariant 6, over everything this scenario produced."""
        hidden = self.secret_strings()
        assert hidden, "the kit found no secret string to look for (does the seed hold a secret?)"
        places = {
            "the logs": logs.getvalue(),
            "an exception or outcome text": "\n".join(self.texts),
            "a notification payload": json.dumps(self.notifier.payloads()),
            "the target's log": self.harness.target_log_since(self.log_mark),
        }
        for path in sorted(self.workdir.rglob("*")):
            if path.is_file() and path.name != "store.key":  # the store's values are encrypted: no plaintext either
                places[f"the file {path.name}"] = path.read_bytes().decode("utf-8", errors="replace")
        for where, text in places.items():
            for secret in hidden:
                assert secret not in text, f"invariant 6: a secret value appears in {where}"

    def close(self) -> None:
        for thing in [*self.closed, self.store, self.journal, self.consumer]:
            with contextlib.suppress(Exception):
                thing.close()


def _store_setup(workdir: Path) -> ComponentSetup:
    return ComponentSetup(name="local", config_dir=workdir, state_dir=workdir)


def _plugin_setup(harness: PluginHarness, workdir: Path) -> ComponentSetup:
    return ComponentSetup(
        name=f"contract-{harness.name}", config_dir=workdir, state_dir=workdir,
        config_file=str(workdir / "rotator.toml"),
    )  # fmt: skip


def _recording_plugin(
    harness: PluginHarness, strategy: str, setup: ComponentSetup, created: list[dict[str, Any]]
) -> RotationPlugin:
    """A new plugin object whose `create` results are kept in `created` (before the engine stores them: a crash
    may keep a value from the store, and the kit must still know it to check invariant 2)."""
    plugin = harness.make_plugin(strategy, setup)
    assert strategy in plugin.strategies, f"the plugin offers no strategy {strategy!r}"
    original = plugin.create

    def create(ctx: RotationContext, current: Credential) -> dict[str, Any]:
        value = original(ctx, current)
        created.append(dict(value))
        return value

    plugin.create = create  # type: ignore[method-assign]
    return plugin


@contextlib.contextmanager
def _rig(harness: PluginHarness, strategy: str, workdir: Path) -> Iterator[_Rig]:
    workdir.mkdir(parents=True, exist_ok=True)
    create_key_file(workdir / "store.key")
    seeded = harness.seed(strategy)
    mark = harness.target_log_mark()  # after the seed: how the harness makes its credential is not the plugin's doing
    store = LocalStore({}, _store_setup(workdir))
    journal = SqliteJournal(workdir / "journal.db")
    consumer = LocalStore({}, _store_setup(workdir))
    created: list[dict[str, Any]] = []
    rig: _Rig | None = None
    try:
        others = harness.other_secrets(strategy, seeded)
        for secret_id, value in others.items():
            store.put_current(secret_id, value)
        start = store.put_current(CONTRACT_SECRET_ID, seeded)
        plugin = _recording_plugin(harness, strategy, _plugin_setup(harness, workdir), created)
        rig = _Rig(
            harness, strategy, workdir, dict(seeded), others, store, journal, consumer, plugin, start.version_id,
            mark, created=created,
        )  # fmt: skip
        assert rig.authenticates(seeded), "the harness's seed does not authenticate (check seed and authenticates)"
        yield rig
    finally:
        if rig is not None:
            rig.close()
        else:
            for thing in (store, journal, consumer):
                thing.close()
        harness.cleanup(seeded)


@contextlib.contextmanager
def _scratch(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        yield workdir
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rotator-plugin-contract-") as tmp:
        yield Path(tmp)


# -- the checks ------------------------------------------------------------------------------------------------


def check_full_rotation(harness: PluginHarness, strategy: str, workdir: Path | None = None) -> None:
    """A rotation with a grace period, then revoke after it, then a second rotation that revokes at once.

    CURRENT authenticates (1); PREVIOUS still works during grace where the strategy says so and no longer after
    revoke; nothing unknown is valid (2); consumers never saw PENDING (3); the notification names the new version
    and carries no secret; nothing leaked (6).
    """
    with _scratch(workdir) as scratch, _rig(harness, strategy, scratch) as rig, captured_logs() as logs:
        with rig.watching() as fired:
            outcome = rig.rotate(rig.bound())
        assert outcome.outcome == RunState.AWAITING_REVOKE.value, f"rotation did not promote: {outcome.error}"
        assert "after-store-promote" in fired
        current, previous = rig.must(Stage.CURRENT), rig.must(Stage.PREVIOUS)
        assert current.version_id == outcome.run_id and previous.version_id == rig.start_version
        assert rig.stage(Stage.PENDING) is None
        assert rig.authenticates(current.value), "invariant 1: the new CURRENT does not authenticate"
        during_grace = rig.authenticates(previous.value)
        assert during_grace == harness.previous_still_valid_during_grace(strategy), (
            f"PREVIOUS {'still' if during_grace else 'no longer'} authenticates during grace, but the harness says "
            f"previous_still_valid_during_grace({strategy!r}) is {harness.previous_still_valid_during_grace(strategy)}"
        )
        [event] = rig.notifier.events
        assert event.version_id == outcome.run_id and event.previous_version_id == rig.start_version
        assert event.plan_id == rig.plan_id and event.kind == "credential.rotated"

        not_yet = rig.runner().revoke_due(rig.bound())
        assert not_yet == [], "revoke ran before the grace period ended"
        assert rig.authenticates(previous.value) == during_grace
        revoked = rig.runner(later=True).revoke_due(rig.bound())
        rig.record(*revoked)
        assert [o.outcome for o in revoked] == [RunState.SUCCEEDED.value], f"revoke failed: {revoked}"
        assert rig.authenticates(current.value), "revoke broke CURRENT"
        if harness.revoke_invalidates_previous(strategy):
            assert not rig.authenticates(previous.value), "PREVIOUS still authenticates after revoke"
        rig.assert_invariants()

        with rig.watching():
            again = rig.rotate(rig.bound(), revoke_old_now=True)
        assert again.outcome == RunState.SUCCEEDED.value, f"the second rotation failed: {again.error}"
        assert rig.must(Stage.PREVIOUS).version_id == outcome.run_id
        if harness.revoke_invalidates_previous(strategy):
            assert not rig.authenticates(current.value), "the first rotation's value survived the second's revoke"
        rig.assert_invariants()
        rig.assert_no_secret_leaked(logs)


def check_methods_idempotent(harness: PluginHarness, strategy: str, workdir: Path | None = None) -> None:
    """Every plugin method called twice in a row converges, as the engine repeats a step after a crash:
    create (+ reconcile), stage, test, unstage, discard, revoke; unstage and discard also with nothing staged.
    (A rolls-forward plugin is never rolled back after create: create, stage, test and revoke only.)"""
    with _scratch(workdir) as scratch, _rig(harness, strategy, scratch) as rig, captured_logs() as logs:
        store, plugin = rig.store, rig.plugin
        check = rig.authenticates
        current = rig.must(Stage.CURRENT)
        if rig.rolls_forward:
            _forward_twice(rig, repeat_create=True)
            rig.assert_no_secret_leaked(logs)
            return

        # A create repeated after a crash that kept its first value from the store, then the rollback.
        run = uuid.uuid4().hex
        ctx = rig.context(run)
        first = plugin.create(ctx, current)
        second = plugin.create(ctx, current)
        pending = store.put_pending(CONTRACT_SECRET_ID, second, run)
        if isinstance(plugin, Reconciler):
            _twice("reconcile", lambda: plugin.reconcile(ctx, [current]))
        if harness.has_target:
            assert not check(first), "the value of a repeated create is valid but in no store (reconcile it)"
        _twice("stage", lambda: plugin.stage(ctx, current, pending))
        assert check(pending.value), "PENDING does not authenticate after stage (twice)"
        _twice("test", lambda: plugin.test(ctx, pending))
        _twice("unstage", lambda: plugin.unstage(ctx, current, pending))
        assert check(current.value), "CURRENT does not authenticate after unstage (twice)"
        _twice("discard", lambda: plugin.discard(ctx, pending))
        store.discard_pending(CONTRACT_SECRET_ID, run)
        if harness.has_target:  # (a minted key stays valid through unstage: only discard deletes it)
            assert not check(pending.value), "PENDING still authenticates after unstage and discard (twice)"
        rig.assert_invariants()

        # Rolled back before anything was staged (a failure at before-stage): unstage and discard must cope.
        run = uuid.uuid4().hex
        ctx2 = rig.context(run)
        unstaged = store.put_pending(CONTRACT_SECRET_ID, plugin.create(ctx2, current), run)
        _twice("unstage (nothing staged)", lambda: plugin.unstage(ctx2, current, unstaged))
        assert check(current.value), "unstage with nothing staged broke CURRENT"
        _twice("discard (nothing staged)", lambda: plugin.discard(ctx2, unstaged))
        store.discard_pending(CONTRACT_SECRET_ID, run)
        rig.assert_invariants()

        _forward_twice(rig, repeat_create=False)
        rig.assert_no_secret_leaked(logs)


def _forward_twice(rig: _Rig, *, repeat_create: bool) -> None:
    """create (twice, reconciled, when `repeat_create`), then stage, test, promote and revoke, each twice."""
    store, plugin, check = rig.store, rig.plugin, rig.authenticates
    current = rig.must(Stage.CURRENT)
    run = uuid.uuid4().hex
    ctx = rig.context(run)
    value = plugin.create(ctx, current)
    if repeat_create:
        first, value = value, plugin.create(ctx, current)
    forward = store.put_pending(CONTRACT_SECRET_ID, value, run)
    if repeat_create:
        if isinstance(plugin, Reconciler):
            _twice("reconcile", lambda: plugin.reconcile(ctx, [current]))
        if rig.harness.has_target:
            assert not check(first), "the value of a repeated create is valid but in no store (reconcile it)"
    _twice("stage", lambda: plugin.stage(ctx, current, forward))
    assert check(forward.value), "PENDING does not authenticate after stage (twice)"
    _twice("test", lambda: plugin.test(ctx, forward))
    store.promote(CONTRACT_SECRET_ID, run)
    new, old = rig.must(Stage.CURRENT), rig.must(Stage.PREVIOUS)
    _twice("revoke", lambda: plugin.revoke(ctx, old, new))
    assert check(new.value), "CURRENT does not authenticate after revoke (twice)"
    if rig.harness.revoke_invalidates_previous(rig.strategy):
        assert not check(old.value), "PREVIOUS still authenticates after revoke (twice)"
    rig.assert_invariants()


def check_failure_rolls_back(harness: PluginHarness, strategy: str, fault: Fault, workdir: Path | None = None) -> None:
    """A RuntimeError at one failpoint (`fault.action` is "error"): the run ends as `expected_end` says (rolled
    back; or, after notify, live with a failed revoke retried later; or stuck until `resume`), CURRENT
    authenticates and the discarded value is valid nowhere. A rolls-forward plugin must never lose its credential.
    """
    assert fault.action == "error", fault
    with _scratch(workdir) as scratch, _rig(harness, strategy, scratch) as rig, captured_logs() as logs:
        with rig.watching(arm=fault.spec) as fired:
            outcome = rig.rotate(rig.bound(), revoke_old_now=True)
        _assert_fired(rig, fault, fired)
        run_id = outcome.run_id or rig.last_run().run_id
        if outcome.outcome == RunState.STUCK.value:
            rig.restart()
            with rig.watching():
                rig.record(*rig.runner().resume(rig.bound()))
        if outcome.outcome == RunState.AWAITING_REVOKE.value and outcome.error:
            with rig.watching():
                rig.record(*rig.runner(later=True).revoke_due(rig.bound()))
        _assert_end(rig, fault, outcome.outcome, run_id)
        rig.assert_no_secret_leaked(logs)


def check_crash_then_resume(harness: PluginHarness, strategy: str, fault: Fault, workdir: Path | None = None) -> None:
    """A crash at one failpoint (`fault.action` is "abort": nothing of the step in flight is journaled, no
    rollback runs), consumers still read no PENDING, then `Runner.resume` in a "new process" (new store, journal
    and plugin objects over the same files) converges (invariant 5), the invariants hold, and the plan rotates
    normally afterwards."""
    assert fault.action == "abort", fault
    with _scratch(workdir) as scratch, _rig(harness, strategy, scratch) as rig, captured_logs() as logs:
        crashed: SimulatedCrash | None = None
        with rig.watching(arm=fault.spec) as fired:
            try:
                rig.rotate(rig.bound(), revoke_old_now=True)
            except SimulatedCrash as exc:
                crashed = exc
        _assert_fired(rig, fault, fired)
        if fault.point in fired:
            assert crashed is not None, f"the crash at {fault.point} did not stop the run"
            rig.texts.append(_exception_text(crashed))
        run_id = rig.last_run().run_id
        rig.observe("after the crash")
        rig.restart()
        with rig.watching():
            rig.record(*rig.runner().resume(rig.bound()))
        _assert_end(rig, fault, "crashed" if crashed else "not crashed", run_id)
        with rig.watching():
            again = rig.rotate(rig.bound(), revoke_old_now=True)
        assert again.outcome == RunState.SUCCEEDED.value, f"the plan does not rotate after the resume: {again.error}"
        rig.assert_invariants()
        rig.assert_no_secret_leaked(logs)


def _assert_fired(rig: _Rig, fault: Fault, fired: list[str]) -> None:
    if rig.rolls_forward and fault.in_rollback:
        return  # a plugin that rolls forward may never roll back: its rollback points need not fire
    assert fault.point in fired, f"the run never passed the failpoint {fault.point} (points passed: {fired})"


def _assert_end(rig: _Rig, fault: Fault, first: str, run_id: str) -> None:
    rig.assert_consumer_never_saw_pending()
    record = rig.run(run_id)
    if rig.rolls_forward:
        _assert_rolled_forward(rig, record)
        return
    end = expected_end(fault)
    assert first == end.first, f"{fault.id}: the run's first outcome was {first}, expected {end.first}"
    assert record.state is end.final, f"{fault.id}: the run ended {record.state.value}, expected {end.final.value}"
    current = rig.must(Stage.CURRENT)
    if end.final is RunState.ROLLED_BACK:
        assert current.version_id == rig.start_version, "after the rollback CURRENT is not the original version"
        assert rig.stage(Stage.PENDING) is None
    else:
        assert current.version_id == run_id, "the run finished but its version is not CURRENT"
        previous = rig.must(Stage.PREVIOUS)
        assert previous.version_id == rig.start_version
        if rig.harness.revoke_invalidates_previous(rig.strategy):
            assert not rig.authenticates(previous.value), "PREVIOUS still authenticates after the revoke"
    rig.assert_invariants()


def _assert_rolled_forward(rig: _Rig, record: RunRecord) -> None:
    """A plugin whose create invalidates the old credential: the run ended live, or stuck with PENDING kept and
    valid (then `resume` must finish it), or rolled back before create returned. Never no valid credential."""
    current = rig.must(Stage.CURRENT)
    if record.state in (RunState.SUCCEEDED, RunState.AWAITING_REVOKE):
        assert current.version_id == record.run_id, "the run finished but its version is not CURRENT"
        rig.assert_invariants()
    elif record.state is RunState.STUCK:
        pending = rig.stage(Stage.PENDING)
        assert pending is not None and pending.version_id == record.run_id, (
            "a rolls-forward run is stuck without its PENDING version: the only valid credential is lost"
        )
        rig.assert_invariants(pending_allowed=True)
    else:
        assert current.version_id == rig.start_version
        rig.assert_invariants()


def check_one_run_per_plan(harness: PluginHarness, strategy: str, workdir: Path | None = None) -> None:
    """Invariant 4: while one rotation holds the plan (paused inside its create step), a second rotation, a
    resume and a revoke sweep from another journal object (another process) raise PlanBusy and change nothing;
    the first then finishes, and the plan rotates again."""
    with _scratch(workdir) as scratch, _rig(harness, strategy, scratch) as rig, captured_logs() as logs:
        reached, release = threading.Event(), threading.Event()
        results: list[RunOutcome | BaseException] = []

        def pause(point: str) -> None:
            if point == "after-create" and threading.current_thread() is worker:
                reached.set()
                release.wait(timeout=120)

        def first() -> None:
            try:
                results.append(rig.runner().rotate(rig.bound()))
            except BaseException as exc:  # reported by the main thread
                results.append(exc)

        worker = threading.Thread(target=first, name="contract-first-run")
        other = SqliteJournal(rig.workdir / "journal.db")
        try:
            with rig.watching(also=pause):
                worker.start()
                try:
                    assert reached.wait(timeout=120), "the first rotation never reached its create step"
                    for name, attempt in (
                        ("rotate", lambda: Runner(other).rotate(rig.bound())),
                        ("resume", lambda: Runner(other).resume(rig.bound())),
                        ("revoke_due", lambda: Runner(other).revoke_due(rig.bound())),
                    ):
                        try:
                            attempt()
                        except PlanBusy as exc:
                            rig.texts.append(_exception_text(exc))
                        else:
                            raise AssertionError(f"invariant 4: a second {name} ran while a rotation held the plan")
                    assert len(other.runs(rig.plan_id)) == 1, "the refused attempts recorded a run"
                finally:
                    release.set()
                    worker.join(timeout=300)
        finally:
            other.close()
        [result] = results
        if isinstance(result, BaseException):
            raise result
        rig.record(result)
        assert result.outcome == RunState.AWAITING_REVOKE.value, f"the first rotation failed: {result.error}"
        assert rig.journal.lease_of(rig.plan_id) is None, "the lease was not released"
        with rig.watching():
            again = rig.rotate(rig.bound(), revoke_old_now=True)
        assert again.ok, f"the plan does not rotate after the first run: {again.error}"
        rig.assert_invariants()
        rig.assert_no_secret_leaked(logs)


def check_lost_journal(harness: PluginHarness, strategy: str, workdir: Path | None = None) -> None:
    """A crash after stage, then the journal is lost (a power cut before its last writes reached the disk; the
    store fsyncs, the journal does not): `resume` finds a PENDING that no run claims and rolls it back through
    the plugin's unstage and discard. CURRENT authenticates and the orphan's value is valid nowhere. (For a
    rolls-forward plugin the orphan is the only valid credential: it must be kept or finished forward.)"""
    with _scratch(workdir) as scratch, _rig(harness, strategy, scratch) as rig, captured_logs() as logs:
        with rig.watching(arm="after-stage=abort"), contextlib.suppress(SimulatedCrash):
            rig.rotate(rig.bound())
        orphan = rig.must(Stage.PENDING)
        rig.restart()
        rig.closed.append(rig.journal)
        for path in rig.workdir.glob("journal.db*"):
            path.unlink()
        rig.journal = SqliteJournal(rig.workdir / "journal.db")
        with rig.watching():
            outcomes = rig.runner().resume(rig.bound())
        rig.record(*outcomes)
        record = rig.run(orphan.version_id)
        if rig.rolls_forward:
            # The orphan holds the only valid credential: it must be finished forward or kept, never discarded.
            _assert_rolled_forward(rig, record)
            return
        assert [o.outcome for o in outcomes] == [RunState.ROLLED_BACK.value], (
            f"the orphan was not rolled back: {outcomes}"
        )
        assert record.state is RunState.ROLLED_BACK
        assert rig.must(Stage.CURRENT).version_id == rig.start_version
        rig.assert_invariants()
        with rig.watching():
            assert rig.rotate(rig.bound(), revoke_old_now=True).ok, "the plan does not rotate after the recovery"
        rig.assert_invariants()
        rig.assert_no_secret_leaked(logs)


def check_no_secret_leaks(harness: PluginHarness, strategy: str, workdir: Path | None = None) -> None:
    """Invariant 6 over one scenario of each kind: a dry run, a rotation, a rolled-back failure, a crash and its
    resume, and a revoke, with logging at debug: no secret in the logs, the journal and other files, exception
    texts, notification payloads, or the target's log."""
    with _scratch(workdir) as scratch, _rig(harness, strategy, scratch) as rig, captured_logs() as logs:
        rig.record(rig.runner().dry_run(rig.bound()))
        with rig.watching():
            assert rig.rotate(rig.bound(), revoke_old_now=True).ok
        with rig.watching(arm="after-stage=error"):
            failed = rig.rotate(rig.bound())
        # A rolls-forward run is held (stuck, PENDING kept) instead of rolled back: resume finishes it.
        assert failed.outcome == (RunState.STUCK if rig.rolls_forward else RunState.ROLLED_BACK).value, failed
        if rig.rolls_forward:
            with rig.watching():
                rig.record(*rig.runner().resume(rig.bound()))
        with rig.watching(arm="after-test=abort"), contextlib.suppress(SimulatedCrash):
            rig.rotate(rig.bound())
        rig.restart()
        with rig.watching():
            rig.record(*rig.runner().resume(rig.bound()))
            rig.record(*rig.runner(later=True).revoke_due(rig.bound()))
        rig.assert_invariants()
        assert len(rig.created) >= 3, "the scenario made fewer values than it should have"
        rig.assert_no_secret_leaked(logs)


def check_errors_carry_no_secret(harness: PluginHarness, strategy: str, workdir: Path | None = None) -> None:
    """The plugin's own error boundary, without the engine's scrubbing: `test` with a value the target refuses
    raises a RotatorError (TestFailed) whose message, repr and chained causes show no secret."""
    with _scratch(workdir) as scratch, _rig(harness, strategy, scratch) as rig, captured_logs() as logs:
        refused = harness.refused_value(rig.seeded)
        assert sensitive_strings(refused), "the refused value holds no secret string"
        if harness.has_target:
            assert not rig.authenticates(refused), "the harness's refused_value authenticates"
        try:
            rig.plugin.test(rig.context(uuid.uuid4().hex), Credential("refused", refused, frozenset({Stage.PENDING})))
        except RotatorError as exc:
            text = _exception_text(exc)
        else:
            raise AssertionError("test() accepted a value the target refuses")
        for secret in sensitive_strings(refused) + sensitive_strings(rig.seeded):
            assert secret not in text, "invariant 6: the plugin's error shows a secret value"
        rig.seen_values.append(refused)
        rig.assert_no_secret_leaked(logs)


PLUGIN_CHECKS: tuple[Callable[[PluginHarness, str, Path | None], None], ...] = (
    check_full_rotation,
    check_methods_idempotent,
    check_one_run_per_plan,
    check_lost_journal,
    check_no_secret_leaks,
    check_errors_carry_no_secret,
)


def run_plugin_contract(harness: PluginHarness, workdir: Path | None = None) -> None:
    """Every check, for every strategy of the harness and every fault; the first failure raises."""
    with _scratch(workdir) as scratch:
        for strategy in harness.strategies:
            for number, check in enumerate(PLUGIN_CHECKS):
                check(harness, strategy, scratch / f"{strategy}-{number}")
            for number, fault in enumerate(FAULTS):
                where = scratch / f"{strategy}-fault-{number}"
                if fault.action == "error":
                    check_failure_rolls_back(harness, strategy, fault, where)
                else:
                    check_crash_then_resume(harness, strategy, fault, where)


# -- pytest ------------------------------------------------------------------------------------------------------


class PluginContract:
    """The plugin contract as pytest tests. Subclass it as Test..., set `strategies`, and give it a
    `plugin_harness` fixture that returns your PluginHarness.

    Tests are parametrized by strategy and, for the failure and crash tests, by fault (ids like
    ``error:after-stage`` or ``abort:before-store-promote``). `known_failures` maps a fault id, or a check's name
    (``lost_journal``, the test's name without ``test_``), to a reason: those tests are marked
    xfail(strict=True), for a known bug outside the plugin, until it is fixed.
    """

    strategies: tuple[str, ...] = ()
    known_failures: Mapping[str, str] = {}

    def pytest_generate_tests(self, metafunc: Any) -> None:
        import pytest  # only under pytest: the kit's functions do not need it

        def marks(key: str) -> list[Any]:
            reason = self.known_failures.get(key)
            return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []

        check = metafunc.function.__name__.removeprefix("test_")
        if "strategy" in metafunc.fixturenames:
            if not self.strategies:
                raise TypeError(f"{type(self).__name__}: set `strategies` to the strategies to check")
            metafunc.parametrize("strategy", [pytest.param(s, id=s, marks=marks(check)) for s in self.strategies])
        if "fault" in metafunc.fixturenames:
            action = "error" if check == "failure_rolls_back" else "abort"
            params = [pytest.param(f, id=f.id, marks=marks(f.id)) for f in FAULTS if f.action == action]
            metafunc.parametrize("fault", params)

    def test_full_rotation(self, plugin_harness: PluginHarness, strategy: str, tmp_path: Path) -> None:
        check_full_rotation(plugin_harness, strategy, tmp_path)

    def test_methods_idempotent(self, plugin_harness: PluginHarness, strategy: str, tmp_path: Path) -> None:
        check_methods_idempotent(plugin_harness, strategy, tmp_path)

    def test_one_run_per_plan(self, plugin_harness: PluginHarness, strategy: str, tmp_path: Path) -> None:
        check_one_run_per_plan(plugin_harness, strategy, tmp_path)

    def test_lost_journal(self, plugin_harness: PluginHarness, strategy: str, tmp_path: Path) -> None:
        check_lost_journal(plugin_harness, strategy, tmp_path)

    def test_no_secret_leaks(self, plugin_harness: PluginHarness, strategy: str, tmp_path: Path) -> None:
        check_no_secret_leaks(plugin_harness, strategy, tmp_path)

    def test_errors_carry_no_secret(self, plugin_harness: PluginHarness, strategy: str, tmp_path: Path) -> None:
        check_errors_carry_no_secret(plugin_harness, strategy, tmp_path)

    def test_failure_rolls_back(
        self, plugin_harness: PluginHarness, strategy: str, fault: Fault, tmp_path: Path
    ) -> None:
        check_failure_rolls_back(plugin_harness, strategy, fault, tmp_path)

    def test_crash_then_resume(
        self, plugin_harness: PluginHarness, strategy: str, fault: Fault, tmp_path: Path
    ) -> None:
        check_crash_then_resume(plugin_harness, strategy, fault, tmp_path)
