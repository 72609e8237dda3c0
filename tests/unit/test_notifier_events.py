"""A notifier's `events = [...]`: which event kinds it receives, validated (file, key, fix; exit 2), refused for the
notifiers that cannot act on a failure (ecs, kubernetes, file), and bound to the plan for the engine's `wants`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.notifiers import events as plugin_events
from typer.testing import CliRunner

from rotator.cli import app
from rotator.components import ComponentSetup
from rotator.config import NotifierConfig, json_schema, load_config
from rotator.errors import ConfigError
from rotator.model import FAILURE_EVENTS, SUCCESS_EVENTS, EventKind
from rotator.registry import load_notifier
from rotator.workspace import Workspace

KINDS = [kind.value for kind in EventKind]
PLAN = """
[[plans]]
id = "orders-db"
plugin = {type = "generated"}
secret = "app/orders"
notify = ["ops", "pager"]
"""
ECS = '[notifiers.deploy]\ntype = "ecs"\nservice = "api"\nregion = "us-east-1"\n'
KUBERNETES = (
    '[notifiers.deploy]\ntype = "kubernetes"\napi_server = "https://k8s.internal"\nnamespace = "app"\n'
    'targets = ["deployment/api"]\ntoken = "env:TEST_KUBE_TOKEN"\n'
)
FILE = '[notifiers.deploy]\ntype = "file"\npath = "app.env"\nformat = "env"\n'
COMMAND = '[notifiers.ops]\ntype = "command"\nargv = ["true"]\n'


def validate(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "rotator.toml"
    path.write_text(text)
    return CliRunner().invoke(app, ["validate", "--config", str(path)]), path


def test_the_plugins_spell_the_kinds_as_the_model_does() -> None:
    # Plugins import only rotator's public API, so rotator_plugins.notifiers.events spells the kinds out.
    assert plugin_events.SUCCESS_KINDS == SUCCESS_EVENTS
    assert plugin_events.FAILURE_KINDS == FAILURE_EVENTS
    assert set(KINDS) == plugin_events.EVERY_KIND


# (name, config text, words the message must contain: the key, what is wrong, and the fix)
BAD = [
    (
        "misspelt-kind",
        COMMAND + 'events = ["credential.rotated", "credential.rotation_faild"]\n',
        [
            "notifiers.ops.events",
            "unknown event kind 'credential.rotation_faild'",
            "did you mean 'credential.rotation_failed'?",
            *KINDS,
            "fix:",
        ],
    ),
    ("unknown-kind", COMMAND + 'events = ["page.me"]\n', ["notifiers.ops.events", "'page.me'", *KINDS, "fix:"]),
    ("empty", COMMAND + "events = []\n", ["notifiers.ops.events", "events is empty", "fix:"]),
    (
        "twice",
        COMMAND + 'events = ["credential.rotation_stuck", "credential.rotated", "credential.rotation_stuck"]\n',
        ["notifiers.ops.events", "'credential.rotation_stuck' more than once", "fix:"],
    ),
    (
        "not-a-list",
        COMMAND + 'events = "credential.rotation_failed"\n',
        ["notifiers.ops.events", 'events must be a list, e.g. events = ["credential.rotation_failed"]'],
    ),
    (
        "required-without-rotated",
        COMMAND + 'required = true\nevents = ["credential.rolled_back", "credential.rotation_failed"]\n',
        ["notifiers.ops.events", 'a required notifier must receive "credential.rotated"', "set required = false"],
    ),
    (
        "ecs-failure-kind",
        ECS + 'events = ["credential.rotated", "credential.rotation_failed"]\n',
        [
            "notifiers.deploy.events",
            "notifier type 'ecs' does not take credential.rotation_failed",
            "it takes only: credential.rotated, credential.rolled_back",
            'fix: write events = ["credential.rotated"]',
            "slack, webhook, sns, eventbridge or command",
        ],
    ),
    (
        "kubernetes-failure-kinds",
        KUBERNETES + 'events = ["credential.rotation_stuck", "credential.rotation_failed"]\n',
        [
            "notifiers.deploy.events",
            "'kubernetes' does not take credential.rotation_failed, credential.rotation_stuck",
            "fix: remove events (the default is the success events)",
        ],
    ),
    (
        "file-failure-kind",
        FILE + 'events = ["credential.rotated", "credential.rolled_back", "credential.rotation_stuck"]\n',
        [
            "notifiers.deploy.events",
            "'file' does not take credential.rotation_stuck",
            'fix: write events = ["credential.rotated", "credential.rolled_back"]',
        ],
    ),
]


@pytest.mark.parametrize(("name", "text", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_events_are_named_and_exit_2(tmp_path: Path, name: str, text: str, words: list[str]) -> None:
    # No plan uses these notifiers: validate checks every declared notifier all the same.
    result, path = validate(tmp_path, text)
    assert result.exit_code == 2, result.output
    assert f"{path}: notifiers." in result.output, "the message names the file and the key"
    for word in words:
        assert word in result.output, f"{word!r} not in {result.output!r}"
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "notifier",
    [
        COMMAND,
        '[notifiers.ops]\ntype = "webhook"\nurl = "https://hooks.internal/rotator"\n',
        '[notifiers.ops]\ntype = "slack"\nwebhook_url = "env:TEST_SLACK_URL"\n',
        '[notifiers.ops]\ntype = "sns"\ntopic_arn = "arn:aws:sns:us-east-1:123456789012:rotations"\n'
        'region = "us-east-1"\n',
        '[notifiers.ops]\ntype = "eventbridge"\nregion = "us-east-1"\n',
    ],
    ids=["command", "webhook", "slack", "sns", "eventbridge"],
)
def test_reporting_notifiers_take_every_kind(tmp_path: Path, notifier: str) -> None:
    result, _ = validate(tmp_path, notifier + f"events = {json.dumps(KINDS)}\nrequired = true\n")
    assert result.exit_code == 0, result.output


def test_redeploying_notifiers_keep_the_success_kinds(tmp_path: Path) -> None:
    for text in (ECS, KUBERNETES, FILE):
        for events in ('["credential.rotated"]', '["credential.rolled_back", "credential.rotated"]', None):
            result, _ = validate(tmp_path, text + (f"events = {events}\n" if events else ""))
            assert result.exit_code == 0, result.output


def test_without_events_a_notifier_gets_the_success_events() -> None:
    config = NotifierConfig.model_validate({"type": "webhook", "url": "https://x.internal"})
    assert config.event_kinds == SUCCESS_EVENTS
    assert "events" not in config.options, "events is the engine's, not an option passed to the notifier"
    assert NotifierConfig.model_validate({"type": "webhook", "required": True}).event_kinds == SUCCESS_EVENTS


def test_bind_gives_the_engine_each_notifiers_events(tmp_path: Path) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(
        COMMAND
        + '[notifiers.pager]\ntype = "command"\nargv = ["true"]\nevents = ["credential.rotation_stuck"]\n'
        + '[notifiers.unused]\ntype = "command"\nargv = ["true"]\nevents = ["credential.rotation_failed"]\n'
        + PLAN
    )
    assert CliRunner().invoke(app, ["init", "--config", str(path)]).exit_code == 0
    workspace = Workspace(load_config(path))
    try:
        bound = workspace.bind(workspace.config.plan("orders-db"))
    finally:
        workspace.close()
    assert dict(bound.notifier_events) == {"ops": SUCCESS_EVENTS, "pager": {"credential.rotation_stuck"}}
    assert bound.wants("ops", "credential.rotated") and not bound.wants("ops", "credential.rotation_stuck")
    assert bound.wants("pager", "credential.rotation_stuck")
    assert not bound.wants("pager", "credential.rotated") and not bound.wants("pager", "credential.rotation_failed")


def test_a_third_party_notifier_that_declares_no_kinds_takes_every_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class EntryPoint:
        def __init__(self, factory: Any) -> None:
            self.factory = factory

        def load(self) -> Any:
            return self.factory

    class Pager:  # declares the kinds it takes, as the built-ins do
        event_kinds = frozenset({"credential.rotation_stuck"})

        def __init__(self, options: Any, setup: Any) -> None:
            pass

        def __call__(self, event: Any) -> None:
            pass

    def plain(options: Any, setup: Any) -> Any:  # a plain function: no event_kinds
        return lambda event: None

    monkeypatch.setattr(
        "rotator.registry.available", lambda kind: {"plain": EntryPoint(plain), "pager": EntryPoint(Pager)}
    )
    setup = ComponentSetup(name="x", config_dir=tmp_path, state_dir=tmp_path, config_file="rotator.toml")
    load_notifier("plain", {}, setup, "notifiers.x", events=KINDS)
    load_notifier("pager", {}, setup, "notifiers.x", events=["credential.rotation_stuck"])
    with pytest.raises(ConfigError, match=r"notifiers\.x\.events: notifier type 'pager' does not take credential\.rot"):
        load_notifier("pager", {}, setup, "notifiers.x", events=["credential.rotated", "credential.rotation_stuck"])


def test_the_schema_lists_the_kinds() -> None:
    events = json_schema()["$defs"]["NotifierConfig"]["properties"]["events"]
    assert events["items"]["enum"] == KINDS
    assert events["default"] == ["credential.rotated", "credential.rolled_back"]
    assert events["uniqueItems"] is True and events["minItems"] == 1
