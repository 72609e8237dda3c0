"""A loaded config bound to live components: the journal, the stores, each plan's plugin and notifiers.

Components are built lazily through the registry, by the names in the config, so a command that touches one
plan never connects to the stores of the others. `close()` closes what the workspace opened: every store, plugin
and notifier that has a `close()` method (their clients, sessions and pools), then the journal; the daemon closes
the old workspace after a reload once no job uses it.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from rotator.components import resolve_secret_ref
from rotator.config import Config, PlanConfig
from rotator.engine.runner import BoundPlan, Runner
from rotator.errors import ConfigError, RotatorError, describe
from rotator.fingerprints import KEY_FILE_NAME as FINGERPRINT_KEY_FILE
from rotator.fingerprints import FingerprintKey, load_key
from rotator.interfaces import AdminReset, Journal, Notifier, RotationPlugin, SecretStore
from rotator.journal import open_journal
from rotator.logs import get_logger
from rotator.registry import load_notifier, load_plugin, load_store

log = get_logger("rotator.workspace")


def close_component(component: object, what: str) -> None:
    """Call the component's optional `close()`; a failure is logged (never raised: the others still close)."""
    close = getattr(component, "close", None)
    if not callable(close):
        return
    try:
        close()
    except Exception as exc:
        log.warning("closing a component failed", component=what, error=describe(exc))


class Workspace:
    def __init__(self, config: Config):
        self.config = config
        self._lock = threading.Lock()
        self._journal: Journal | None = None
        self._stores: dict[str, SecretStore] = {}
        self._notifiers: dict[str, Notifier] = {}
        self._bound: dict[str, BoundPlan] = {}
        self._closed = False

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    def _check_open(self) -> None:
        if self._closed:  # a closed workspace opening a journal or a client again would leak it
            raise RotatorError("internal error: this config's components were closed (after a reload or shutdown)")

    @property
    def journal(self) -> Journal:
        with self._lock:
            self._check_open()
            if self._journal is None:
                if not self.config.model.rotator.journal and not self.state_dir.is_dir():
                    raise ConfigError(
                        f"state directory {self.state_dir} does not exist",
                        file=str(self.config.path),
                        key="rotator.state_dir",
                        fix="run `rotator init` first",
                    )
                self._journal = open_journal(self.config.model.rotator.journal, self.state_dir)
            return self._journal

    @functools.cached_property
    def fingerprint_key(self) -> FingerprintKey | None:
        """The fingerprints' key: [rotator] fingerprint_key, else state_dir/fingerprint.key when `init` made one."""
        ref = self.config.model.rotator.fingerprint_key
        if ref:
            setup = self.config.setup("rotator")
            return load_key(
                resolve_secret_ref(ref, key="rotator.fingerprint_key", setup=setup), "rotator.fingerprint_key"
            )
        path = self.state_dir / FINGERPRINT_KEY_FILE
        try:
            return load_key(path.read_text(), str(path))
        except FileNotFoundError:
            return None

    def runner(self, stop: threading.Event | None = None) -> Runner:
        section = self.config.model.rotator
        return Runner(
            self.journal,
            lease_seconds=section.lease_seconds,
            step_timeout=section.step_timeout,
            revoke_recheck_seconds=section.revoke_recheck_seconds,
            notify_retry_for=section.notify_retry_for,
            notify_retry_seconds=section.notify_retry_seconds,
            alert_after_failures=section.alert_after_failures,
            fingerprint_key=self.fingerprint_key,
            stop=stop,
        )

    def store(self, name: str) -> SecretStore:
        with self._lock:
            self._check_open()
            if name not in self._stores:
                component = self.config.store_config(name)
                self._stores[name] = load_store(
                    component.type, component.options, self.config.setup(name), f"stores.{name}"
                )
            return self._stores[name]

    def notifier(self, name: str) -> Notifier:
        with self._lock:
            self._check_open()
            if name not in self._notifiers:
                component = self.config.model.notifiers[name]
                # events: the kinds it is configured for, checked against those it takes (validate refuses an
                # ecs, kubernetes or file notifier listing a failure event, for example).
                self._notifiers[name] = load_notifier(
                    component.type,
                    component.options,
                    self.config.setup(name),
                    f"notifiers.{name}",
                    events=component.events,
                )
            return self._notifiers[name]

    def _plugin(self, plan: PlanConfig) -> RotationPlugin:
        """Build the plan's plugin and check that it offers the plan's strategy."""
        key = self.config.plan_key(plan)
        plugin = load_plugin(plan.plugin.type, plan.plugin.options, self.config.setup(plan.id), f"{key}.plugin")
        if plan.strategy not in plugin.strategies:
            raise ConfigError(
                f"plugin {plan.plugin.type!r} has no strategy {plan.strategy!r}",
                file=str(self.config.path),
                key=f"{key}.strategy",
                fix=f"use one of: {', '.join(plugin.strategies)}",
            )
        if plan.reconcile == "auto" and not isinstance(plugin, AdminReset):
            raise ConfigError(
                f"plugin {plan.plugin.type!r} cannot reconcile (it has no admin reset)",
                file=str(self.config.path),
                key=f"{key}.reconcile",
                fix='remove reconcile = "auto" (postgres, mysql and redis can reconcile)',
            )
        return plugin

    def bind(self, plan: PlanConfig) -> BoundPlan:
        found = self._bound.get(plan.id)
        if found is not None:
            return found
        self._check_open()
        plugin = self._plugin(plan)
        bound = BoundPlan(
            plan_id=plan.id,
            secret_id=plan.secret,
            store_name=plan.store,
            store=self.store(plan.store),
            plugin=plugin,
            strategy=plan.strategy,
            grace=plan.grace,
            options=plan.plugin.options,
            password_policy=plan.password_policy.policy(),
            notifiers=tuple((name, self.notifier(name)) for name in plan.notify),
            tags=plan.tags,
            required_notifiers=frozenset(n for n in plan.notify if self.config.model.notifiers[n].required),
            revoke_deadline=plan.revoke_deadline,
            rollback_on_failure=plan.rollback_on_failure,
            reconcile_auto=plan.reconcile == "auto",
            notifier_events={name: self.config.model.notifiers[name].event_kinds for name in plan.notify},
        )
        with self._lock:
            kept = self._bound.setdefault(plan.id, bound)
        if kept is not bound:  # another thread bound the plan meanwhile: one plugin per plan, the other closed
            close_component(plugin, f"plugin of plan {plan.id}")
        return kept

    def check_components(self) -> list[str]:
        """Build every plan's plugin and notifiers (not stores: they may need the network) to find config
        errors that only the component can see: unknown type, bad option, unknown strategy. Returns a warning per
        plan whose target connection does not verify TLS (the optional plugin method `unverified_tls() -> str |
        None`); with [rotator] require_verified_tls, that is a ConfigError instead. Every command that runs calls
        this, so what runs is what `validate` accepted. Every problem is collected before any is raised (as
        ConfigProblems when there are several), so `validate` reports them all in one pass."""
        from rotator.config import raise_problems

        checked: dict[tuple[str, str, str], str | None] = {}
        warnings: list[str] = []
        problems: list[ConfigError] = []
        for plan in self.config.plans:
            # Plans with the same plugin type, options and strategy validate alike: build one of each (10,000
            # plans of a few kinds start in a fraction of a second). Each plan builds its own when it runs.
            kind = (plan.plugin.type, json.dumps(plan.plugin.options, sort_keys=True, default=str), plan.strategy)
            if kind not in checked:
                try:
                    plugin = self._plugin(plan)
                except ConfigError as exc:
                    problems.append(exc)
                    checked[kind] = None
                    continue
                probe = getattr(plugin, "unverified_tls", None)
                checked[kind] = probe() if callable(probe) else None
                close_component(plugin, f"{self.config.plan_key(plan)}.plugin")  # a probe, not kept
            reason = checked[kind]
            if reason is None:
                continue
            key = f"{self.config.plan_key(plan)}.plugin"
            if self.config.model.rotator.require_verified_tls:
                problems.append(
                    ConfigError(
                        "the connection to the target does not verify TLS, and rotator.require_verified_tls is set: "
                        + reason,
                        file=str(self.config.path),
                        key=key,
                        fix="set the plugin's TLS option to a verifying mode (above), or require_verified_tls = false",
                    )
                )
                continue
            warnings.append(f"{key}: the connection to the target does not verify TLS: {reason}")
        for name in self.config.model.notifiers:
            try:
                self.notifier(name)
            except ConfigError as exc:
                problems.append(exc)
        from rotator.registry import available

        stores = available("store")
        for name, component in self.config.model.stores.items():
            if component.type not in stores:
                problems.append(
                    ConfigError(
                        f"unknown store type {component.type!r} (installed: {', '.join(sorted(stores))})",
                        file=str(self.config.path),
                        key=f"stores.{name}.type",
                        fix="use an installed type, or install the package that provides it",
                    )
                )
        raise_problems(problems)
        return warnings

    def select(
        self, plan_ids: Iterable[str] = (), tags: Iterable[str] = (), everything: bool = False
    ) -> list[PlanConfig]:
        plan_ids, tags = list(plan_ids), list(tags)
        if everything:
            return [p for p in self.config.plans if p.enabled]
        chosen = [self.config.plan(plan_id) for plan_id in plan_ids]
        for tag in tags:
            tagged = [p for p in self.config.plans if tag in p.tags]
            if not tagged:
                raise ConfigError(f"no plan has tag {tag!r}", file=str(self.config.path), fix="check --tag")
            chosen.extend(p for p in tagged if p not in chosen)
        return chosen

    def close(self) -> None:
        """Close every component this workspace built, then the journal. Idempotent; later use raises."""
        with self._lock:
            self._closed = True
            bound, self._bound = self._bound, {}
            notifiers, self._notifiers = self._notifiers, {}
            stores, self._stores = self._stores, {}
            journal, self._journal = self._journal, None
        for plan_id, bp in bound.items():
            close_component(bp.plugin, f"plugin of plan {plan_id}")
        for name, notifier in notifiers.items():
            close_component(notifier, f"notifiers.{name}")
        for name, store in stores.items():
            close_component(store, f"stores.{name}")
        if journal is not None:
            journal.close()


def operator_name() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"
