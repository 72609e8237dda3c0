"""The TOML config -> validated models. Every error names the file, the key and the fix (exit 2).

Components are tables `{type = "name", ...options}`. A plan's plugin is `plugin = "name"` or
`plugin = {type = "name", ...options}`. Values that are secrets are never written inline: they are `env:VAR`
or `file:PATH` references (see rotator.components); an inline one is refused.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from rotator.components import SECRET_REF_PREFIXES, ComponentSetup
from rotator.errors import ConfigError
from rotator.model import SUCCESS_EVENTS, EventKind, PasswordPolicy
from rotator.passwords import policy_problem
from rotator.schedules import (
    MAX_DURATION,
    SCHEDULE_FIX,
    Schedule,
    Window,
    parse_duration,
    parse_schedule,
    parse_window,
)

DEFAULT_CONFIG = "rotator.toml"
ModelT = TypeVar("ModelT", bound=BaseModel)
_PLAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Option names that hold a secret when their value is a string. Names ending in these suffixes point to one.
_SECRET_OPTION = re.compile(r"(pass(word)?|secret|token|api_?key|signing_key|private_key|client_secret|auth)$", re.I)
_POINTER_SUFFIXES = ("_env", "_file", "_path", "_id", "_arn", "_name", "_header", "_ref", "_url")
_LOCAL_STORE_NAME = "local"

# Fixes shown with pydantic's errors, by the key that failed.
_FIXES = {
    "schedule": SCHEDULE_FIX,
    "lease_seconds": "use a number of seconds above 5 and at most 86400 (default 600)",
    "step_timeout": "use a number of seconds above 0 and at most 86400 (default 120)",
    "revoke_sweep_seconds": "use a number of seconds above 0 and at most 86400 (default 30)",
    "catch_up_spread_seconds": "use a number of seconds from 0 to 86400 (default 300)",
    "notify_retry_seconds": "use a number of seconds above 0 and at most 86400 (default 60)",
    "revoke_recheck_seconds": "use a number of seconds above 0 and at most 86400 (default 60)",
    "concurrency": "use a whole number from 1 to 256 (default 8)",
    "length": "use a password length from 12 to 4096 (32 or more is recommended)",
    "password_policy": (
        "exclude fewer character classes or characters, or set a length that holds one of each required class "
        "(12 to 4096), or require_each_included_type = false"
    ),
    "journal": (
        "use sqlite:///PATH, or postgresql://USER@HOST/DB without a password: libpq reads it from PGPASSFILE "
        "(default ~/.pgpass) or PGPASSWORD in the daemon's environment"
    ),
    "window": 'use "HH:MM-HH:MM" in UTC, e.g. "02:00-04:00"',
    "grace": 'use a duration such as "1h", "30m", "2d" or "0"',
    "revoke_deadline": 'use a duration such as "24h", "30m" or "0" (do not wait)',
    "notify_retry_for": 'use a duration such as "24h" or "30m"',
    "id": "use letters, digits, '.', '_' and '-' (up to 128), starting with a letter or digit",
    "events": "list event kinds from: " + ", ".join(kind.value for kind in EventKind) + ", each once "
    '(e.g. events = ["credential.rotated", "credential.rotation_failed"]); a required notifier needs '
    '"credential.rotated"',
}


# Durations repeat across plans ("1h" in 10,000 of them): parsed once each. typed, so that True is not 1.
_duration = functools.lru_cache(maxsize=1024, typed=True)(parse_duration)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeakReportsSection(_Strict):
    """`[rotator.leak_reports]`: the daemon's leak endpoint (rotator/leak_reports.py), on when the section exists."""

    # Where it listens: localhost unless said otherwise (put it behind a relay or a proxy, not on the internet).
    listen: str = "127.0.0.1:9471"
    # The HMAC key that signs reports: "env:VAR" or "file:PATH", at least 32 characters.
    key: str
    # How old (or how far in the future) a signed report may be; a signature is accepted once within it.
    max_age: timedelta = timedelta(minutes=5)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad listen {value!r}: use HOST:PORT, e.g. 127.0.0.1:9471")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value.startswith(SECRET_REF_PREFIXES):
            raise ValueError('the leak endpoint key is a secret: write "env:VAR" or "file:PATH", never the key itself')
        return value

    @field_validator("max_age", mode="before")
    @classmethod
    def _max_age(cls, value: Any) -> Any:
        return _duration(value) if isinstance(value, (str, int, float)) else value

    @field_validator("max_age")
    @classmethod
    def _max_age_bounds(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= value <= timedelta(hours=1):
            raise ValueError("max_age must be between 10s and 1h (it bounds how long a captured report stays valid)")
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class RotatorSection(_Strict):
    state_dir: str = "state"
    journal: str | None = None  # None: SQLite in state_dir; "postgresql://..." for several daemons
    plans_dir: str | None = None
    # Every number is finite and bounded (a day at most for the seconds below): inf, nan or 1e308 is a config error.
    lease_seconds: float = Field(default=600, gt=5, le=86400, allow_inf_nan=False)
    step_timeout: float = Field(default=120, gt=0, le=86400, allow_inf_nan=False)
    log_level: str = "info"
    # The daemon's log lines: "json" for a log collector, "console" for readable lines, "auto" (the default): readable
    # on a terminal, JSON otherwise. The daemon's --json-logs / --console-logs override it.
    log_format: Literal["auto", "json", "console"] = "auto"
    concurrency: int = Field(default=8, ge=1, le=256)
    revoke_sweep_seconds: float = Field(default=30, gt=0, le=86400, allow_inf_nan=False)
    # How the daemon serves /healthz and /metrics: "HOST:PORT" (e.g. "127.0.0.1:9465"); unset: not served.
    metrics_address: str | None = None
    # After downtime, overdue plans start spread over at most this many seconds (never hundreds at once).
    catch_up_spread_seconds: float = Field(default=300, ge=0, le=86400, allow_inf_nan=False)
    # A failed notification is retried on later ticks: first after this many seconds, then doubling (at most an
    # hour between tries), for notify_retry_for after the rotation.
    notify_retry_seconds: float = Field(default=60, gt=0, le=86400, allow_inf_nan=False)
    notify_retry_for: timedelta = timedelta(hours=24)
    # While PREVIOUS is still in use (or a required notifier has not succeeded), the revoke looks again this often.
    revoke_recheck_seconds: float = Field(default=60, gt=0, le=86400, allow_inf_nan=False)
    # After this many failed runs of a plan in a row (and every as many more), a credential.rotation_stuck alert
    # goes to the notifiers that subscribed to it; scheduled retries go on with backoff. 0: never.
    alert_after_failures: int = Field(default=3, ge=0, le=1000)
    # A plan whose target connection does not verify TLS (validate warns for each) is refused instead.
    require_verified_tls: bool = False
    # The key of the credentials' fingerprints (rotator/fingerprints.py, `rotator leak`): "env:VAR" or "file:PATH"
    # holding base64; default state_dir/fingerprint.key. Daemons sharing a journal must share it.
    fingerprint_key: str | None = None
    leak_reports: LeakReportsSection | None = None

    @field_validator("fingerprint_key")
    @classmethod
    def _fingerprint_key(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(SECRET_REF_PREFIXES):
            raise ValueError('the fingerprint key is a secret: write "env:VAR" or "file:PATH", never the key itself')
        return value

    @field_validator("notify_retry_for", mode="before")
    @classmethod
    def _notify_retry_for(cls, value: Any) -> Any:
        return _duration(value) if isinstance(value, (str, int, float)) else value

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad metrics_address {value!r}: use HOST:PORT, e.g. 127.0.0.1:9465")
        return value

    @property
    def metrics_host_port(self) -> tuple[str, int] | None:
        if not self.metrics_address:
            return None
        host, _, port = self.metrics_address.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an empty host means every interface

    @field_validator("journal")
    @classmethod
    def _journal(cls, value: str | None) -> str | None:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                f"unknown journal URL scheme {value.split(':', 1)[0]!r}: use sqlite:///PATH or postgresql://..."
            )
        if value and value.startswith(("postgresql://", "postgres://")) and (where := _password_in_url(value)):
            raise ValueError(f"the journal URL holds a password ({where}); the config must not")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level must be debug, info, warning or error")
        return value.lower()


def _password_in_url(url: str) -> str | None:
    """Where a libpq URL carries a password (never the password itself), or None."""
    parts = urlsplit(url)
    if ":" in parts.netloc.rpartition("@")[0]:
        return "in the user part, user:password@"
    for name, _value in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in ("password", "sslpassword"):
            return f"as ?{name.lower()}="
    return None


class ComponentConfig(BaseModel):
    """`{type = "name", ...options}`: options are validated by the component itself when it is built."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# The kinds `events` may list, in EventKind's order; the default is the success kinds, the meaning every config had
# before failure events existed.
_EVENT_KINDS = tuple(kind.value for kind in EventKind)
_DEFAULT_EVENTS = tuple(kind for kind in _EVENT_KINDS if kind in SUCCESS_EVENTS)


class NotifierConfig(ComponentConfig):
    """A notifier: `{type = "name", required = false, events = [...], ...options}`. `required` and `events` are
    the engine's, not the notifier's: PREVIOUS is not revoked until a required notifier has succeeded for the run,
    and the notifier is only called for the event kinds in `events` (rotator.model.EventKind)."""

    required: bool = False
    events: tuple[str, ...] = Field(
        default=_DEFAULT_EVENTS,
        description="the event kinds this notifier receives (default: the success events)",
        json_schema_extra={"items": {"type": "string", "enum": list(_EVENT_KINDS)}, "minItems": 1, "uniqueItems": True},
    )

    @field_validator("events", mode="before")
    @classmethod
    def _events_is_a_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # pydantic's own "Input should be a valid tuple" says nothing in TOML's terms
            raise ValueError(f'events must be a list, e.g. events = ["{value}"]')
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not value:
            raise ValueError("events is empty, so the notifier would never be called")
        for kind in value:
            if kind not in _EVENT_KINDS:
                close = difflib.get_close_matches(kind, _EVENT_KINDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown event kind {kind!r}{hint}; allowed: {', '.join(_EVENT_KINDS)}")
        twice = sorted({kind for kind in value if value.count(kind) > 1})
        if twice:
            raise ValueError(f"events lists {', '.join(map(repr, twice))} more than once")
        # A required notifier gates revoke on its delivery of the rotated event: without that kind, revoke would
        # wait for a delivery that never comes.
        if info.data.get("required") and EventKind.ROTATED.value not in value:
            raise ValueError(
                'a required notifier must receive "credential.rotated" (revoke waits until it has succeeded for '
                "the run); add it to events, or set required = false"
            )
        return value

    @property
    def event_kinds(self) -> frozenset[str]:
        return frozenset(self.events)


class PasswordPolicyConfig(_Strict):
    length: int = Field(default=32, ge=12, le=4096)
    exclude_characters: str = ":/@\"'\\"
    require_each_included_type: bool = True
    exclude_lowercase: bool = False
    exclude_uppercase: bool = False
    exclude_numbers: bool = False
    exclude_punctuation: bool = False

    @model_validator(mode="after")
    def _characters_left(self) -> PasswordPolicyConfig:
        # The generator's own check, at load: a policy that leaves nothing to draw from fails here, not at create.
        problem = policy_problem(self.policy())
        if problem is not None:
            raise ValueError(problem[1])  # the fix: _FIXES["password_policy"]
        return self

    def policy(self) -> PasswordPolicy:
        return PasswordPolicy(**self.model_dump())


class PlanConfig(_Strict):
    id: str
    plugin: ComponentConfig
    store: str = _LOCAL_STORE_NAME
    secret: str
    schedule: str = "manual"
    window: str | None = None
    strategy: str = "single-user"
    grace: timedelta = timedelta(hours=1)
    tags: tuple[str, ...] = ()
    notify: tuple[str, ...] = ()
    password_policy: PasswordPolicyConfig = PasswordPolicyConfig()
    enabled: bool = True
    # After grace, while the plugin sees PREVIOUS still in use, revoke waits up to this long, then revokes anyway
    # and records who was still on it. "0": never wait.
    revoke_deadline: timedelta = timedelta(hours=24)
    # A required notifier failing after promote, while PREVIOUS still works, puts PREVIOUS back as CURRENT.
    rollback_on_failure: bool = False
    # "auto": a run that finds CURRENT refused at the target first resets it with the plan's admin credential
    # (as `rotator reconcile` does), then rotates. "off": such a run fails cleanly and says to reconcile.
    reconcile: Literal["off", "auto"] = "off"
    # Manual plans (plugin = "manual": a credential a person rotates; rotator/reminders.py). `owner` is who, `due`
    # a fixed date it must next be rotated by (else the schedule after the last recorded rotation); reminders
    # (credential.rotation_due) start `remind_before` ahead and repeat every `remind_every`, overdue ones too.
    owner: str | None = None
    due: datetime | None = None
    remind_before: timedelta = timedelta(days=14)
    remind_every: timedelta = timedelta(days=1)

    @field_validator("due", mode="before")
    @classmethod
    def _due(cls, value: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):  # TOML's `due = 2027-01-15`
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            return datetime.fromisoformat(value.strip()).replace(tzinfo=UTC)
        return value

    @field_validator("due")
    @classmethod
    def _due_zone(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @field_validator("remind_before", "remind_every", mode="before")
    @classmethod
    def _remind(cls, value: Any) -> Any:
        return _duration(value) if isinstance(value, (str, int, float)) else value

    @field_validator("remind_every")
    @classmethod
    def _remind_every(cls, value: timedelta) -> timedelta:
        if value < timedelta(minutes=1):
            raise ValueError("remind_every must be at least 1m (a reminder a second is noise, not a reminder)")
        return value

    @model_validator(mode="after")
    def _manual(self) -> PlanConfig:
        if self.is_manual:
            if not (self.owner or "").strip():
                raise ValueError(
                    'a manual plan needs an owner, who rotates it by hand and gets its reminders: owner = "team-db"'
                )
            if self.due is None and self.schedule == "manual":
                raise ValueError(
                    'a manual plan needs a schedule (e.g. schedule = "rate(90 days)") or a due date '
                    "(due = 2027-01-15) to remind its owner of"
                )
        elif self.due is not None:
            raise ValueError('due is for manual plans (plugin = "manual"); an automatic plan follows its schedule')
        return self

    @property
    def is_manual(self) -> bool:
        """Rotated by a person, not by the engine: the daemon reminds instead of rotating."""
        return self.plugin.type == "manual"

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _PLAN_ID.match(value):
            raise ValueError(f"bad plan id {value!r}")
        return value

    @field_validator("plugin", mode="before")
    @classmethod
    def _plugin(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value

    @field_validator("grace", "revoke_deadline", mode="before")
    @classmethod
    def _grace(cls, value: Any) -> Any:
        return _duration(value) if isinstance(value, (str, int, float)) else value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the secret name is empty")
        return value

    @property
    def parsed_schedule(self) -> Schedule:
        return parse_schedule(self.schedule)

    @property
    def parsed_window(self) -> Window | None:
        return parse_window(self.window) if self.window else None


class ConfigModel(_Strict):
    """The whole config. load_config validates each section and each plan on its own (so that one bad plan does not
    hide the problems of another) and builds this with model_construct: a check across sections belongs in
    load_config (as _name_problems), not in a model validator here, which load_config would not run
    (tests/unit/test_config_errors.py holds the list)."""

    rotator: RotatorSection = RotatorSection()
    stores: dict[str, ComponentConfig] = {}
    notifiers: dict[str, NotifierConfig] = {}
    plans: tuple[PlanConfig, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> ConfigModel:
        seen: set[str] = set()
        for plan in self.plans:
            if plan.id in seen:
                raise ValueError(f"plan id {plan.id!r} is used twice")
            seen.add(plan.id)
        return self


@dataclass(frozen=True)
class Config:
    """A loaded, validated config, with where it came from (paths in it are relative to its file)."""

    model: ConfigModel
    path: Path
    warnings: tuple[str, ...] = ()
    plan_files: dict[str, Path] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        path = Path(self.model.rotator.state_dir).expanduser()
        return path if path.is_absolute() else self.config_dir / path

    @property
    def plans(self) -> tuple[PlanConfig, ...]:
        return self.model.plans

    @functools.cached_property
    def _plans_by_id(self) -> dict[str, tuple[int, PlanConfig]]:
        # Looked up once per plan and per run: a dict, not a scan (10,000 plans would make scans quadratic).
        return {plan.id: (index, plan) for index, plan in enumerate(self.model.plans)}

    def plan_key(self, plan: PlanConfig) -> str:
        """The plan's key path in the config, for error messages: plans[3] (id 'orders-db')."""
        index, _ = self._plans_by_id[plan.id]
        return f"plans[{index}] (id {plan.id!r})"

    def plan(self, plan_id: str) -> PlanConfig:
        found = self._plans_by_id.get(plan_id)
        if found is not None:
            return found[1]
        known = ", ".join(p.id for p in self.model.plans) or "none"
        raise ConfigError(f"no plan named {plan_id!r} (plans: {known})", file=str(self.path), fix="check the name")

    def store_config(self, name: str) -> ComponentConfig:
        if name in self.model.stores:
            return self.model.stores[name]
        if name == _LOCAL_STORE_NAME:
            return ComponentConfig(type="local")
        raise ConfigError(f"no store named {name!r}", file=str(self.path), key=f"stores.{name}")

    def setup(self, name: str) -> ComponentSetup:
        return ComponentSetup(
            name=name,
            config_dir=self.config_dir,
            state_dir=self.state_dir,
            config_file=str(self.path),
            protected_paths=self.protected_paths,
        )

    @functools.cached_property
    def protected_paths(self) -> tuple[Path, ...]:
        """What no component may write over: state_dir, each local store's database and key file, the SQLite
        journal (wherever the config puts them)."""
        setup = ComponentSetup(name="", config_dir=self.config_dir, state_dir=self.state_dir)
        found = [self.state_dir]
        journal = self.model.rotator.journal
        if journal and journal.startswith("sqlite:///"):
            found.append(Path(journal.removeprefix("sqlite:///")))  # as rotator.journal.open_journal reads it
        names = {plan.store for plan in self.model.plans} | set(self.model.stores)
        for name in sorted(names):
            component = self.store_config(name)
            if component.type == "local":
                for option in ("path", "key_file"):
                    value = component.options.get(option)
                    if isinstance(value, str) and value:
                        found.append(setup.path(value))
        return tuple(found)


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config, else ROTATOR_CONFIG, else ./rotator.toml."""
    return Path(explicit or os.environ.get("ROTATOR_CONFIG") or DEFAULT_CONFIG)


class ConfigProblems(ConfigError):
    """Several problems found in one pass (`validate` reports them all, not only the first); each is a ConfigError
    of its own in `problems`, naming its file, key and fix."""

    def __init__(self, problems: Sequence[ConfigError]):
        self.problems = tuple(problems)
        files = {problem.file for problem in self.problems}
        file = next(iter(files)) if len(files) == 1 else None
        lines = [f"{len(self.problems)} problems:"]
        for problem in self.problems:
            text = str(problem)
            if file and text.startswith(f"{file}: "):
                text = text[len(file) + 2 :]
            lines.append("  " + text.replace("\n", "\n  "))
        super().__init__("\n".join(lines), file=file)


_SECTION_RANK = {"rotator": 1, "stores": 2, "notifiers": 3, "plans": 4}


def _reading_order(problem: ConfigError) -> tuple[str, int, int]:
    """Where a problem sits, to list problems as the file reads: by file, then section, then plan."""
    key = problem.key or ""
    section = re.match(r"[A-Za-z_]+", key)
    index = re.match(r"plans\[(\d+)\]", key)
    rank = _SECTION_RANK.get(section[0], 0) if section else 0
    return (problem.file or "", rank, int(index[1]) if index else -1)


def raise_problems(problems: Sequence[ConfigError]) -> None:
    """Raise nothing, the one problem, or all of them as ConfigProblems (in the order the file reads)."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigProblems(sorted(problems, key=_reading_order))


def _key_path(loc: tuple[Any, ...], data: Mapping[str, Any]) -> str:
    """pydantic's location as a TOML key path: plans[0].schedule, naming the plan by id where known."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) and "id" in node[item]:
                label = f"[{item}] (id {node[item]['id']!r})"
            parts[-1:] = [(parts[-1] if parts else "") + label]
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def _model_at(model: type[BaseModel], names: Sequence[str]) -> type[BaseModel] | None:
    """The model that holds the keys at `names` inside `model` (through tuples, dicts and optionals), or None."""
    current: type[BaseModel] | None = model
    skip = False
    for name in names:
        if skip:  # the NAME of a [stores.NAME]-like table
            skip = False
            continue
        field_info = current.model_fields.get(name) if current is not None else None
        if field_info is None:
            return None
        annotation = field_info.annotation
        candidates = [annotation, *typing.get_args(annotation)]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        skip = typing.get_origin(annotation) is dict
    return current


def _unknown_key(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, str]:
    """The message and fix for a key the model does not know, with the closest known one as a suggestion."""
    names = [str(item) for item in loc if isinstance(item, str)]
    last = names[-1] if names else ""
    holder = _model_at(model, names[:-1])
    known = list(holder.model_fields) if holder is not None else []
    close = difflib.get_close_matches(last, known, n=1, cutoff=0.6)
    message = f"unknown key {last!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if close:
        return message, f"write {close[0]} instead of {last} (the keys are in config/rotator.schema.json)"
    return message, f"remove {last!r} or check its spelling (see config/rotator.schema.json)"


def _fix_for(loc: tuple[Any, ...], error_type: str) -> str | None:
    last = next((str(item) for item in reversed(loc) if isinstance(item, str)), "")
    if error_type == "missing":
        return f"add {last} = ..."
    return _FIXES.get(last)


def _validation_problems(
    exc: ValidationError,
    model: type[BaseModel],
    file: str,
    data: Mapping[str, Any],
    prefix: tuple[Any, ...] = (),
) -> list[ConfigError]:
    """Each of pydantic's errors for `model` as a ConfigError; `prefix` is where the validated table sits in `data`
    (("plans", 3) for the fourth plan), for the key path."""
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = _key_path(prefix + loc, data)
        if error["type"] == "extra_forbidden":
            message, fix = _unknown_key(model, loc)
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            fix = _fix_for(loc, str(error["type"])) or "see config/rotator.schema.json for the allowed values"
        problems.append(ConfigError(message, file=file, key=key, fix=fix))
    return problems


def _inline_secrets(options: Mapping[str, Any], prefix: str) -> list[str]:
    found = []
    for key, value in options.items():
        path = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            found.extend(_inline_secrets(value, path))
        elif (
            isinstance(value, str)
            and _SECRET_OPTION.search(key)
            and not key.endswith(_POINTER_SUFFIXES)
            and not value.startswith(SECRET_REF_PREFIXES)
        ):
            found.append(path)
    return found


def _read_toml(path: Path, shown: str) -> tuple[dict[str, Any], bool]:
    """The file's tables, and whether its text mentions "env:" at all (so a config without env: references skips
    the walk that warns of unset ones)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            "config file not found",
            file=shown,
            fix="pass --config PATH, set ROTATOR_CONFIG, or create rotator.toml",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", file=shown) from None
    return _parse_toml(text, shown), "env:" in text


def _parse_toml(text: str, shown: str) -> dict[str, Any]:
    """TOML 1.0, parsed by rtoml (Rust: a 1.3 MB file of 10,000 plans in 40 ms; tomllib, pure Python, takes 220 ms)
    when it is installed. When rtoml refuses the text, tomllib parses it again: its message names the line and
    column, and what tomllib accepts is never refused."""
    try:
        import rtoml
    except ImportError:  # pragma: no cover - rtoml is a dependency; tomllib alone gives the same result
        pass
    else:
        try:
            data: dict[str, Any] = rtoml.loads(text)
            return data
        except rtoml.TomlParsingError:
            pass
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=shown, fix="correct the syntax at that line") from None


_TOP_LEVEL_SHAPES = {
    "rotator": ("table", "a [rotator] section of settings"),
    "stores": ("table of tables", '[stores.NAME] sections, each with type = "..."'),
    "notifiers": ("table of tables", '[notifiers.NAME] sections, each with type = "..."'),
    "plans": ("array of tables", "[[plans]] sections (or plans = [{...}, ...])"),
}


def _toml_type(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _shape_problems(data: Mapping[str, Any], shown: str) -> list[ConfigError]:
    """The top-level keys have the shape the models expect, so a wrong one is named as such (`stores = "x"`,
    `plans = 5`), before anything iterates over it."""
    problems: list[ConfigError] = []
    for key, (shape, fix) in _TOP_LEVEL_SHAPES.items():
        if key not in data:
            continue
        value = data[key]
        if shape == "table" and isinstance(value, dict):
            continue
        if shape == "table of tables" and isinstance(value, dict):
            problems += [
                ConfigError(
                    f"must be a table, not {_toml_type(item)}", file=shown, key=f"{key}.{name}", fix=f"write {fix}"
                )
                for name, item in value.items()
                if not isinstance(item, dict)
            ]
            continue
        if shape == "array of tables" and isinstance(value, list):
            problems += [
                ConfigError(
                    f"must be a table, not {_toml_type(item)}", file=shown, key=f"{key}[{index}]", fix=f"write {fix}"
                )
                for index, item in enumerate(value)
                if not isinstance(item, dict)
            ]
            continue
        article = "an" if shape.startswith("a") else "a"
        problems.append(
            ConfigError(f"must be {article} {shape}, not {_toml_type(value)}", file=shown, key=key, fix=f"write {fix}")
        )
    return problems


@dataclass
class _PlanEntry:
    """A plan's table as read, from the config file or a plans_dir file, and how its errors name it."""

    data: dict[str, Any]
    file: str
    key_data: Mapping[str, Any]  # what the key path is computed against
    prefix: tuple[Any, ...]  # where `data` sits in key_data


def _plans_dir_entries(
    data: Mapping[str, Any], path: Path, shown: str, problems: list[ConfigError]
) -> tuple[list[_PlanEntry], bool]:
    """The plans of plans_dir's files (problems appended), and whether any file mentions "env:"."""
    rotator = data.get("rotator")
    plans_dir = rotator.get("plans_dir") if isinstance(rotator, dict) else None
    if not plans_dir or not isinstance(plans_dir, str):
        return [], False
    directory = Path(plans_dir) if Path(plans_dir).is_absolute() else path.parent / plans_dir
    if not directory.is_dir():
        problems.append(
            ConfigError(
                f"plans_dir {directory} is not a directory",
                file=shown,
                key="rotator.plans_dir",
                fix="create it or correct the path (relative to the config file)",
            )
        )
        return [], False
    entries: list[_PlanEntry] = []
    env_refs = False
    for plan_file in sorted(directory.glob("*.toml")):
        try:
            plan_data, mentions_env = _read_toml(plan_file, str(plan_file))
            env_refs = env_refs or mentions_env
        except ConfigError as exc:
            problems.append(exc)
            continue
        if "plans" in plan_data:
            shape = _shape_problems({"plans": plan_data["plans"]}, str(plan_file))
            if shape:
                problems += shape
                continue
            entries += [_PlanEntry(entry, str(plan_file), entry, ()) for entry in plan_data["plans"]]
        else:
            entries.append(_PlanEntry(plan_data, str(plan_file), plan_data, ()))
    return entries, env_refs


def _validated(
    model: type[ModelT],
    value: Any,
    file: str,
    data: Mapping[str, Any],
    prefix: tuple[Any, ...],
    problems: list[ConfigError],
) -> ModelT | None:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems += _validation_problems(exc, model, file, data, prefix)
        return None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config (and plans_dir): every problem found in one pass, each a ConfigError naming
    file, key and fix (several: ConfigProblems). Each section and each plan is validated on its own, so one bad plan
    does not hide the problems of the others."""
    path = config_path(path)
    shown = str(path)
    data, env_refs = _read_toml(path, shown)
    raise_problems(_shape_problems(data, shown))  # what follows iterates over these shapes
    problems: list[ConfigError] = []
    for key in data:
        if key not in ConfigModel.model_fields:
            message, fix = _unknown_key(ConfigModel, (key,))
            problems.append(ConfigError(message, file=shown, key=key, fix=fix))
    entries = [_PlanEntry(entry, shown, data, ("plans", index)) for index, entry in enumerate(data.get("plans", []))]
    dir_entries, dir_env_refs = _plans_dir_entries(data, path, shown, problems)
    entries += dir_entries
    env_refs = env_refs or dir_env_refs
    plans_data = [entry.data for entry in entries]
    merged = {**data, "plans": plans_data}

    for kind in ("stores", "notifiers"):
        for name, options in (data.get(kind) or {}).items():
            problems += [
                ConfigError(
                    "a secret is written inline in the config",
                    file=shown,
                    key=key,
                    fix=f'move the value to an environment variable and write {key.rsplit(".", 1)[1]} = "env:VAR"',
                )
                for key in _inline_secrets({k: v for k, v in options.items() if k != "type"}, f"{kind}.{name}")
            ]
    for index, entry in enumerate(entries):
        plugin = entry.data.get("plugin")
        if isinstance(plugin, dict):
            problems += [
                ConfigError(
                    "a secret is written inline in the config",
                    file=entry.file,
                    key=key,
                    fix='write it as "env:VAR", or keep it in a store',
                )
                for key in _inline_secrets({k: v for k, v in plugin.items() if k != "type"}, f"plans[{index}].plugin")
            ]

    rotator = _validated(RotatorSection, data.get("rotator", {}), shown, data, ("rotator",), problems)
    stores: dict[str, ComponentConfig] = {}
    for name, table in (data.get("stores") or {}).items():
        store = _validated(ComponentConfig, table, shown, data, ("stores", name), problems)
        if store is not None:
            stores[name] = store
    notifiers: dict[str, NotifierConfig] = {}
    for name, table in (data.get("notifiers") or {}).items():
        notifier = _validated(NotifierConfig, table, shown, data, ("notifiers", name), problems)
        if notifier is not None:
            notifiers[name] = notifier
    plans: list[PlanConfig] = []
    indexed: list[tuple[int, PlanConfig]] = []  # each valid plan with its index among all plans, for error keys
    plan_files: dict[str, Path] = {}
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        plan = _validated(PlanConfig, entry.data, entry.file, entry.key_data, entry.prefix, problems)
        if plan is None:
            continue
        if plan.id in seen:
            problems.append(
                ConfigError(
                    f"plan id {plan.id!r} is used twice", file=entry.file, key="plans", fix="give each plan its own id"
                )
            )
            continue
        seen.add(plan.id)
        plans.append(plan)
        indexed.append((index, plan))
        if entry.file != shown:
            plan_files[plan.id] = Path(entry.file)
    declared_stores = set(data.get("stores") or {})  # declared, even if invalid (named once, as invalid)
    declared_notifiers = set(data.get("notifiers") or {})
    problems += _name_problems(entries, declared_stores, declared_notifiers, shown)
    if rotator is not None:
        problems += _shared_journal_problems(rotator, stores, indexed, shown, plan_files)
    raise_problems(problems)
    assert rotator is not None  # problems were raised otherwise
    model = ConfigModel.model_construct(rotator=rotator, stores=stores, notifiers=notifiers, plans=tuple(plans))
    warnings = tuple(_unset_env_refs(merged)) if env_refs else ()
    return Config(model=model, path=path, plan_files=plan_files, warnings=warnings)


# Store types that keep their secrets on one host (in its state_dir): under a journal that daemons on several
# hosts share, each host would rotate its own copy while the journal says the plan rotated once.
HOST_LOCAL_STORE_TYPES = frozenset({"local"})


def _shared_journal_problems(
    section: RotatorSection,
    stores: Mapping[str, ComponentConfig],
    plans: Sequence[tuple[int, PlanConfig]],
    shown: str,
    plan_files: Mapping[str, Path],
) -> list[ConfigError]:
    """A PostgreSQL journal is shared by daemons on several hosts: refuse stores that only one host can see."""
    journal = section.journal or ""
    if not journal.startswith(("postgresql://", "postgres://")):
        return []
    why = (
        "rotator.journal is a PostgreSQL journal, which daemons on several hosts share, but this store keeps its "
        "secrets in one host's state_dir: the daemon on another host would rotate its own copy (consumers there "
        "keep the old secret) while the shared journal says the plan rotated"
    )
    single = "or remove rotator.journal to use the embedded SQLite journal with a single daemon"
    fix = f"keep the secrets in a store every daemon reaches (type vault-kv2 or aws-secretsmanager), {single}"
    problems = [
        ConfigError(
            f"store {name!r} (type {component.type!r}) is local to one host: {why}",
            file=shown,
            key=f"stores.{name}.type",
            fix=fix,
        )
        for name, component in stores.items()
        if component.type in HOST_LOCAL_STORE_TYPES
    ]
    problems += [
        ConfigError(
            f"plan {plan.id!r} uses the embedded local store (no store set), which is local to one host: {why}",
            file=str(plan_files.get(plan.id, shown)),
            key=f"plans[{index}] (id {plan.id!r}).store",
            fix=f'set store = "NAME", a [stores.NAME] of type vault-kv2 or aws-secretsmanager, {single}',
        )
        for index, plan in plans
        if plan.store not in stores and plan.store == _LOCAL_STORE_NAME
    ]
    return problems


def _name_problems(
    entries: Sequence[_PlanEntry], stores: set[str], notifiers: set[str], shown: str
) -> list[ConfigError]:
    """Stores and notifiers that plans name but the config does not declare; read from the plans' tables as
    written, so that a plan with other problems is checked too."""
    problems = []
    for index, entry in enumerate(entries):
        plan_id = entry.data.get("id")
        where = f"plans[{index}] (id {plan_id!r})" if isinstance(plan_id, str) else f"plans[{index}]"
        store = entry.data.get("store", _LOCAL_STORE_NAME)
        if isinstance(store, str) and store not in stores and store != _LOCAL_STORE_NAME:
            known = ", ".join(sorted(stores)) or "none"
            close = difflib.get_close_matches(store, sorted(stores | {_LOCAL_STORE_NAME}), n=1)
            problems.append(
                ConfigError(
                    f"unknown store {store!r} (stores: {known})" + (f"; did you mean {close[0]!r}?" if close else ""),
                    file=entry.file,
                    key=f"{where}.store",
                    fix=f"declare [stores.{store}] with a type, or use one of the stores above",
                )
            )
        notify = entry.data.get("notify", [])
        for name in notify if isinstance(notify, list) else []:
            if isinstance(name, str) and name not in notifiers:
                known = ", ".join(sorted(notifiers)) or "none"
                close = difflib.get_close_matches(name, sorted(notifiers), n=1)
                problems.append(
                    ConfigError(
                        f"unknown notifier {name!r} (notifiers: {known})"
                        + (f"; did you mean {close[0]!r}?" if close else ""),
                        file=entry.file,
                        key=f"{where}.notify",
                        fix=f"declare [notifiers.{name}] or remove it from notify",
                    )
                )
    return problems


def _unset_env_refs(data: Any, path: str = "") -> list[str]:
    warnings = []
    if isinstance(data, dict):
        for key, value in data.items():
            warnings.extend(_unset_env_refs(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            warnings.extend(_unset_env_refs(value, f"{path}[{index}]"))
    elif isinstance(data, str) and data.startswith("env:") and not os.environ.get(data[4:]):
        warnings.append(f"{path}: environment variable {data[4:]} is not set here (it must be where the rotator runs)")
    return warnings


# What the loader accepts where pydantic's schema says otherwise (it describes the parsed value, a timedelta as an
# ISO 8601 duration, a plugin as a table): the JSON schema must accept what `validate` accepts, as written in TOML.
_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^ *(0|( *[0-9]{1,12} *[dhms])+) *$", "examples": ["1h", "30m", "1h30m", "0"]},
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION.total_seconds()},
    ],
    "description": 'a duration: "1h", "30m", "2d", "1h30m", "0", or a number of seconds (at most 365 days)',
}
_SECRET_REF_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": "^(" + "|".join(re.escape(prefix) for prefix in SECRET_REF_PREFIXES) + ")",
    "description": 'a reference, never the secret itself: "env:VAR" or "file:PATH"',
}
_HOST_PORT_SCHEMA: dict[str, Any] = {"type": "string", "pattern": r"^.*:[0-9]{1,5}$", "description": "HOST:PORT"}


def _any_case(words: Sequence[str]) -> str:
    """A JSON-schema pattern matching these words in any case (the loader lower-cases them)."""
    return "^(" + "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in word) for word in words) + ")$"


_PROPERTY_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("PlanConfig", "plugin"): {
        "anyOf": [{"type": "string", "description": "the plugin type"}, {"$ref": "#/$defs/ComponentConfig"}],
        "description": 'plugin = "postgres", or a table: {type = "postgres", connect_timeout = 5, ...}',
    },
    ("PlanConfig", "id"): {"type": "string", "pattern": _PLAN_ID.pattern},
    ("PlanConfig", "window"): {
        "type": "string",
        "pattern": "^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$",
        "description": 'UTC, "HH:MM-HH:MM"; the run starts at a random moment inside it',
    },
    ("PlanConfig", "schedule"): {
        "type": "string",
        "description": 'rate(...) or cron(...) as in AWS, a 5-field crontab, or "manual"',
        "examples": ["rate(30 days)", "cron(0 2 ? * SUN *)", "0 2 * * 0", "manual"],
    },
    ("PlanConfig", "due"): {
        "type": "string",
        "anyOf": [{"format": "date"}, {"format": "date-time"}],
        "description": "a manual plan's due date (TOML date or date-time)",
    },
    ("RotatorSection", "journal"): {
        "type": "string",
        "pattern": "^(sqlite:///|postgresql://|postgres://)",
        "description": "sqlite:///PATH, or postgresql://USER@HOST/DB without a password",
    },
    ("RotatorSection", "log_level"): {
        "type": "string",
        "pattern": _any_case(("debug", "info", "warning", "error")),
        "default": "info",
    },
    ("RotatorSection", "metrics_address"): _HOST_PORT_SCHEMA,
    ("RotatorSection", "fingerprint_key"): _SECRET_REF_SCHEMA,
    ("LeakReportsSection", "listen"): _HOST_PORT_SCHEMA,
    ("LeakReportsSection", "key"): _SECRET_REF_SCHEMA,
}


def _loader_view(node: Any) -> Any:
    """pydantic's schema with every duration as the loader reads it (pydantic writes format "duration")."""
    if isinstance(node, dict):
        if node.get("format") == "duration" and node.get("type") == "string":
            kept = {k: v for k, v in node.items() if k in ("title", "description")}
            return {**_DURATION_SCHEMA, **kept}
        return {key: _loader_view(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_loader_view(value) for value in node]
    return node


def json_schema() -> dict[str, Any]:
    """The config's JSON schema as the loader reads TOML (config/rotator.schema.json is this, written by
    `python -m rotator.config`; tests/unit/test_config_schema.py checks every shipped config and the README's
    examples against it). What a schema cannot say (a cron that matches no date, a plugin's own options, names
    that must be declared) is left to `rotator validate`."""
    schema: dict[str, Any] = _loader_view(ConfigModel.model_json_schema())
    for (definition, name), override in _PROPERTY_SCHEMAS.items():
        properties = schema["$defs"].get(definition, {}).get("properties", {})
        if name in properties:
            kept = {k: v for k, v in properties[name].items() if k in ("title", "default") and k not in override}
            properties[name] = {**override, **kept}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rotator.toml"
    return schema


if __name__ == "__main__":
    import json
    import sys

    sys.stdout.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
