"""The slack notifier against the Slack incoming-webhook fake (tests/fakes/slack.py) over HTTPS with a throwaway CA.

No Slack workspace can be used from tests; the fake answers as Slack's docs say (status codes, error bodies,
Retry-After, Block Kit limits). The webhook URL is a secret: no test output, error, log or journal may show it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.notifiers.slack import SlackNotifier

from rotator import ComponentSetup, ConfigError, NotifyError, RotationEvent, TransientError
from rotator.registry import load_notifier
from rotator.testing import sample_event
from tests.cli_env import CliEnv
from tests.fakes.slack import FakeSlack
from tests.fakes.throwaway_ca import TlsFiles, make_throwaway_tls


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_throwaway_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def slack(tls: TlsFiles) -> Iterator[FakeSlack]:
    fake = FakeSlack(tls).serve()
    yield fake
    fake.stop()


@pytest.fixture
def hook(slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> str:
    url = slack.add_webhook("#ops")
    monkeypatch.setenv("TEST_SLACK_URL", url)
    return url


def make(tls: TlsFiles, tmp_path: Path, sleeps: list[float] | None = None, **options: Any) -> SlackNotifier:
    setup = ComponentSetup(name="chat", config_dir=tmp_path, state_dir=tmp_path / "state")
    opts = {"webhook_url": "env:TEST_SLACK_URL", "ca_bundle": str(tls.ca_cert), "timeout": 5, **options}
    return SlackNotifier(opts, setup, sleep=(sleeps.append if sleeps is not None else lambda _s: None))


def test_posts_text_and_blocks_naming_the_rotation(slack: FakeSlack, hook: str, tls: TlsFiles, tmp_path: Path):
    event = sample_event()
    make(tls, tmp_path)(event)
    [message] = slack.messages_for(hook)  # accepted by the fake's Block Kit checks
    assert set(message) == {"text", "blocks"}
    for expected in (event.plan_id, event.secret_id, event.store, event.version_id):
        assert expected in message["text"]
    text = json.dumps(message)
    for expected in (event.run_id, event.previous_version_id or "", "credential.rotated", "notifier contract"):
        assert expected in text
    secret = event.read_value() if event.read_value else {}
    assert secret["password"] not in text and secret["api_key"] not in text and hook not in text


def test_a_rollback_says_so(slack: FakeSlack, hook: str, tls: TlsFiles, tmp_path: Path):
    event = sample_event("credential.rolled_back")
    make(tls, tmp_path)(event)
    [message] = slack.messages_for(hook)
    assert message["text"].startswith("Rotation rolled back")
    assert str(event.previous_version_id) in message["text"] and "read the store again" in message["text"]


def test_mrkdwn_is_escaped(slack: FakeSlack, hook: str, tls: TlsFiles, tmp_path: Path):
    """A reason such as "<!channel>" must not page the whole channel: &, < and > are escaped as Slack asks."""
    event = RotationEvent(**{**sample_event().__dict__, "reason": "leak <!channel> & <https://x|y>"})
    make(tls, tmp_path)(event)
    text = json.dumps(slack.messages_for(hook))
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; &lt;https://x|y&gt;" in text


@pytest.mark.parametrize(
    ("kind", "headline"),
    [
        (
            "credential.rotation_failed",
            "Rotation of plan `{plan}` failed and was rolled back: the old credential still works.",
        ),
        ("credential.rotation_stuck", "Rotation of plan `{plan}` is stuck: an operator must act."),
    ],
)
def test_a_failure_says_what_happened_and_what_to_do(
    slack: FakeSlack, hook: str, tls: TlsFiles, tmp_path: Path, kind: str, headline: str
):
    event = sample_event(kind)
    make(tls, tmp_path)(event)
    [message] = slack.messages_for(hook)  # accepted by the fake's Block Kit checks
    expected = headline.format(plan=event.plan_id)
    assert message["text"] == f"{expected} Error: {event.error}"
    blocks = message["blocks"]
    assert blocks[0]["text"]["text"] == expected
    assert blocks[1]["text"]["text"] == f"*Error*\n{event.error}"
    assert blocks[2]["text"]["text"] == f"*Action*\n{event.action}"
    fields = dict(field["text"].split("\n", 1) for field in blocks[3]["fields"])
    assert fields == {
        "*Event*": kind,
        "*Plan*": event.plan_id,
        "*Secret*": event.secret_id,
        "*Store*": event.store,
        "*Run*": event.run_id,
        "*Trigger*": "manual",
        "*Reason*": "notifier contract",
        "*Live version*": str(event.previous_version_id),  # CURRENT, still live
        "*Failed version*": event.version_id,  # the failed run's, never live
        "*Tags*": "contract",
    }
    assert "credential.rotated" not in json.dumps(message) and "is now at version" not in json.dumps(message)


def test_a_long_error_is_cut_in_the_middle_and_escaped_within_slacks_limits(
    slack: FakeSlack, hook: str, tls: TlsFiles, tmp_path: Path
):
    """A 20,000-character error (a driver's dump) must not make Slack refuse the message (3000 characters per
    section text): the start (step, plan) and the end (the cause) are kept, on one line, mrkdwn escaped."""
    error = "stage failed for plan orders-db:\n" + "<x> & " * 3300 + "\nFATAL: the cause at the end"
    event = RotationEvent(**{**sample_event("credential.rotation_stuck").__dict__, "error": error})
    make(tls, tmp_path)(event)
    [message] = slack.messages_for(hook)  # the fake refuses a section text over 3000 characters (invalid_blocks)
    shown = message["blocks"][1]["text"]["text"]
    assert shown.startswith("*Error*\nstage failed for plan orders-db: &lt;x&gt; &amp; ")
    assert shown.endswith("FATAL: the cause at the end") and " … " in shown
    assert "\n" not in shown.removeprefix("*Error*\n") and "<x>" not in shown
    assert len(shown) <= 3000 and len(message["text"]) <= 3000


def test_a_failure_without_error_or_action_still_renders(slack: FakeSlack, hook: str, tls: TlsFiles, tmp_path: Path):
    event = RotationEvent(**{**sample_event("credential.rotation_failed").__dict__, "error": None, "action": None})
    make(tls, tmp_path)(event)
    [message] = slack.messages_for(hook)
    assert message["blocks"][1]["text"]["text"] == "*Error*\nnot recorded"
    assert "rotator history" in message["blocks"][2]["text"]["text"]


@pytest.mark.parametrize(
    ("break_it", "error", "match"),
    [
        (lambda s, u: s.revoke(u), NotifyError, r"\(404 no_service\): the webhook was removed"),
        (lambda s, u: s.delete_channel(u), NotifyError, r"\(404 channel_not_found\)"),
        (lambda s, u: s.archive(u), NotifyError, r"\(410 channel_is_archived\): the channel is archived"),
        (lambda s, u: s.restrict(u), NotifyError, r"\(403 action_prohibited\): the workspace does not allow"),
        (lambda s, u: s.fail(400, "invalid_payload"), NotifyError, r"\(400 invalid_payload\).*bug"),
        (lambda s, u: s.fail(500, "rollup_error"), TransientError, "Slack answered 500 rollup_error"),
        (lambda s, u: s.fail(502, "<html>proxy page</html>"), TransientError, r"answered 502; retried$"),
        (lambda s, u: s.rate_limit(1, retry_after=45), TransientError, r"rate limiting this webhook \(Retry-After 45s"),
    ],
)
def test_slack_errors_are_mapped_without_the_url(
    slack: FakeSlack, hook: str, tls: TlsFiles, tmp_path: Path, break_it: Any, error: type[Exception], match: str
):
    break_it(slack, hook)
    sleeps: list[float] = []
    with pytest.raises(error, match=match) as info:
        make(tls, tmp_path, sleeps)(sample_event())
    assert hook not in str(info.value) and hook.rsplit("/", 1)[1] not in str(info.value)
    assert sleeps == []  # Retry-After 45s is more than max_retry_after: the engine retries later
    assert slack.messages_for(hook) == []


def test_a_short_retry_after_is_waited_once(slack: FakeSlack, hook: str, tls: TlsFiles, tmp_path: Path):
    slack.rate_limit(1, retry_after=2)
    sleeps: list[float] = []
    make(tls, tmp_path, sleeps)(sample_event())
    assert sleeps == [2.0] and len(slack.messages_for(hook)) == 1
    slack.rate_limit(2, retry_after=1)  # still limited after the wait: no second wait, the engine retries
    with pytest.raises(TransientError):
        make(tls, tmp_path, sleeps)(sample_event())
    assert sleeps == [2.0, 1.0]


def test_tls_is_verified_and_transport_failures_are_transient(
    slack: FakeSlack, hook: str, tls: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    setup = ComponentSetup(name="chat", config_dir=tmp_path, state_dir=tmp_path)
    with pytest.raises(NotifyError, match="TLS verification") as info:
        SlackNotifier({"webhook_url": "env:TEST_SLACK_URL"}, setup)(sample_event())  # system CAs only
    assert hook not in str(info.value)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{sock.getsockname()[1]}/services/T0/B0/closed-port-secret"
    monkeypatch.setenv("TEST_SLACK_URL", closed)
    with pytest.raises(TransientError) as info:
        make(tls, tmp_path)(sample_event())
    assert "closed-port-secret" not in str(info.value)
    monkeypatch.setenv("TEST_SLACK_URL", hook.replace("https://", "http://"))
    with pytest.raises(NotifyError, match="must start with https://") as info:
        make(tls, tmp_path)(sample_event())
    assert hook.rsplit("/", 1)[1] not in str(info.value)
    monkeypatch.delenv("TEST_SLACK_URL")
    with pytest.raises(NotifyError, match="TEST_SLACK_URL is not set"):
        make(tls, tmp_path)(sample_event())


def test_the_url_must_be_a_reference(tmp_path: Path):
    setup = ComponentSetup(name="chat", config_dir=tmp_path, state_dir=tmp_path, config_file="rotator.toml")
    with pytest.raises(ConfigError, match=r"notifiers\.chat\.webhook_url") as info:
        load_notifier("slack", {"webhook_url": "https://hooks.slack.com/services/T/B/abc"}, setup, "notifiers.chat")
    assert "abc" not in str(info.value)
    with pytest.raises(ConfigError, match=r"notifiers\.chat\.channel"):
        load_notifier("slack", {"webhook_url": "env:X", "channel": "#ops"}, setup, "notifiers.chat")


def test_through_the_engine_the_url_never_shows(slack: FakeSlack, tls: TlsFiles, tmp_path: Path):
    """rotate-now with a slack notifier in a subprocess: the message arrives; then with a revoked webhook the
    failure is recorded, and neither the output, the history, the logs nor the state files hold the URL."""
    good, revoked = slack.add_webhook("#ops"), slack.add_webhook("#old")
    slack.revoke(revoked)
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"

[notifiers.chat]
type = "slack"
webhook_url = "env:TEST_SLACK_URL"
ca_bundle = "{tls.ca_cert}"

[[plans]]
id = "signing-key"
plugin = {{type = "generated"}}
secret = "app/signing-key"
notify = ["chat"]
""")
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    cli.seed("app/signing-key", {"value": "s" * 43})
    done = cli.run("rotate-now", "signing-key", "--json", env={"TEST_SLACK_URL": good})
    assert done.code == 0, done.stderr
    [message] = slack.messages_for(good)
    assert done.json()["results"][0]["run_id"] in message["text"]
    current = cli.run("store", "get", "app/signing-key").json()["value"]
    assert current not in json.dumps(message)
    failed = cli.run("rotate-now", "signing-key", "--json", env={"TEST_SLACK_URL": revoked})
    assert failed.code == 0 and failed.json()["results"][0]["notes"]  # recorded, not rolled back
    history = cli.run("history", "--json")
    assert "404 no_service" in history.stdout  # the notifier's error, kept in the journal
    texts = [done.stdout, done.stderr, failed.stdout, failed.stderr, history.stdout, history.stderr]
    texts += [p.read_bytes().decode("latin-1") for p in cli.state_files()]
    for text in texts:
        for url in (good, revoked):
            assert url.rsplit("/", 1)[1] not in text
