"""The generic http-api-key plugin: its template language, its config validation, TLS with a throwaway CA, the
retry policy of its transport, and a rotation through the `rotator` command over HTTPS.

The target is tests/fakes/sendgrid.py (an HTTP fake written from SendGrid's public API reference; see its
docstring), which the plugin is configured to speak purely through declared requests (see
tests/contract/harnesses_saas.py `http_api_key_options`). The plugin contract over it runs in
tests/contract/test_plugins.py.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.http_transport import HttpOptions, HttpTransport
from rotator_plugins.rotation.http_api_key import HttpApiKeyPlugin
from rotator_plugins.rotation.http_template import Template, TemplateError, compile_tree, render_tree
from werkzeug.wrappers import Request, Response

from rotator import (
    ConfigError,
    Credential,
    PasswordPolicy,
    RotationContext,
    Stage,
    StepError,
    TransientError,
)
from rotator.components import ComponentSetup
from rotator.engine.runner import BoundPlan, Runner
from rotator.journal.sqlite import SqliteJournal
from rotator.local_store import LocalStore, create_key_file
from rotator.registry import load_plugin
from tests.cli_env import CliEnv
from tests.contract.harnesses_saas import http_api_key_options
from tests.fakes.saas_base import HttpError
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.throwaway_ca import TlsFiles, make_throwaway_tls

SECRET = "app/mailer"
ADMIN_SCOPES = {"api_keys.create", "api_keys.read", "api_keys.delete"}


# -- the template language ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("/keys/{current.__class__}", "only {root} or {root.field}"),
        ("/keys/{key._secret}", "only {root} or {root.field}"),
        ("/keys/{current.key_id.real}", "only {root} or {root.field}"),
        ("/keys/{current[key_id]}", "only {root} or {root.field}"),
        ("/keys/{current.key_id!r}", "only {root} or {root.field}"),
        ("/keys/{current.key_id:>40}", "only {root} or {root.field}"),
        ("/keys/{os.environ}", "unknown placeholder {os.environ}"),
        ("/keys/{", "bad template"),
        ("/keys/{0}", "only {root} or {root.field}"),
    ],
)
def test_templates_refuse_anything_but_root_and_field(text: str, why: str) -> None:
    with pytest.raises(TemplateError) as caught:
        Template.compile(text, {"current", "key"})
    assert why in str(caught.value)


def test_templates_encode_url_values_and_keep_json_types() -> None:
    url = Template.compile("/keys/{key.key_id}?plan={plan}&x={{literal}}", {"key", "plan"})
    assert (
        url.render({"key": {"key_id": "a/b?c=d"}, "plan": "p q"}, url=True)
        == "/keys/a%2Fb%3Fc%3Dd?plan=p%20q&x={literal}"
    )
    body = compile_tree({"name": "{name}", "scopes": "{extra.scopes}", "n": 3, "tags": ["x-{name}"]}, {"name", "extra"})
    rendered = render_tree(body, {"name": "k1", "extra": {"scopes": ["mail.send", "alerts.read"]}})
    assert rendered == {"name": "k1", "scopes": ["mail.send", "alerts.read"], "n": 3, "tags": ["x-k1"]}
    with pytest.raises(TemplateError, match="has no field 'nope'"):
        Template.compile("{key.nope}", {"key"}).render({"key": {"key_id": "1"}})
    with pytest.raises(TemplateError, match="not a single value"):
        Template.compile("x{extra.scopes}", {"extra"}).render({"extra": {"scopes": ["a"]}})


# -- config validation ---------------------------------------------------------------------------------------------

GOOD = http_api_key_options("https://api.example.test", "env:EXAMPLE_ADMIN")


def _with(**changes: Any) -> dict[str, Any]:
    options = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        target = options
        *path, last = dotted.split("__")
        for part in path:
            target = target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return options


@pytest.mark.parametrize(
    ("options", "key", "text"),
    [
        (_with(create__url="/keys/{current.__class__}"), "create.url", "only {root} or {root.field}"),
        (_with(test__headers={"Authorization": "Bearer {name}"}), "test.headers", "unknown placeholder {name}"),
        (_with(create=None), "create", "a value is required"),
        (_with(create__key_path=None), "create.key_path", "a value is required"),
        (_with(revoke__expect=[99]), "revoke.expect", "HTTP statuses"),
        (_with(create__method="TRACE"), "create.method", "'TRACE' is not one of: DELETE, GET, PATCH, POST, PUT"),
        (_with(admin={"token": "s3cr3t-value"}), "admin", 'reference such as "env:VAR"'),
        (_with(admin={"other": "env:X"}), "admin", "create uses {admin.token}, but admin has no 'token'"),
        (_with(key_field="id"), "key_field", "would not be scrubbed"),
        (_with(base_url="http://api.example.test"), "base_url", "must use https://"),
        (_with(list__url="/v3/api_keys?page={page}"), "list.page_start", "set page_start"),
        (_with(name_prefix="{plan.id}:"), "name_prefix", "plan has no fields"),
        (_with(test__url="/v3/{key}"), "test.url", "name a field of key"),
        (_with(create__json={"a": 1}, create__form={"b": "2"}), "create.json", "either json or form"),
        (_with(surprise=True), "surprise", "remove 'surprise'"),
    ],
)
def test_a_bad_option_is_a_config_error_naming_it(options: dict[str, Any], key: str, text: str) -> None:
    setup = ComponentSetup(name="mailer", config_dir=Path("."), state_dir=Path("."), config_file="rotator.toml")
    with pytest.raises(ConfigError) as caught:
        load_plugin("http-api-key", options, setup, "plans[0].plugin")
    assert caught.value.key == ("plans[0].plugin" + (f".{key}" if key else ""))
    assert text in str(caught.value)
    assert "s3cr3t-value" not in str(caught.value)


def test_good_options_load() -> None:
    plugin = load_plugin("http-api-key", GOOD, ComponentSetup("mailer", Path("."), Path(".")), "plans[0].plugin")
    assert isinstance(plugin, HttpApiKeyPlugin) and plugin.strategies == ("single-user",)
    assert plugin.secret_field == "api_key" and plugin.id_field == "key_id"


# -- a rig: the SendGrid fake, an embedded store and journal ---------------------------------------------------------


class Rig:
    def __init__(self, tmp: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp, self.fake = tmp, fake
        admin = fake.add_key("ops admin", ADMIN_SCOPES)
        self.env = f"MAILER_ADMIN_{uuid.uuid4().hex[:8].upper()}"
        monkeypatch.setenv(self.env, admin.api_key)
        self.admin_id = admin.api_key_id
        seed = fake.add_key("mailer", {"mail.send"})
        self.seeded = {"key_id": seed.api_key_id, "api_key": seed.api_key, "name": seed.name}
        create_key_file(tmp / "store.key")
        self.store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp, state_dir=tmp))
        self.journal = SqliteJournal(tmp / "journal.db")
        self.store.put_current(SECRET, self.seeded)
        self.sleeps: list[float] = []

    def plugin(self, **options: Any) -> HttpApiKeyPlugin:
        setup = ComponentSetup(name="mailer", config_dir=self.tmp, state_dir=self.tmp)
        base = http_api_key_options(self.fake.url, f"env:{self.env}", propagation_timeout=1)
        return HttpApiKeyPlugin({**base, **options}, setup, sleep=self.sleeps.append)

    def bound(self, plugin: HttpApiKeyPlugin) -> BoundPlan:
        return BoundPlan(plan_id="mailer", secret_id=SECRET, store_name="local", store=self.store, plugin=plugin)

    def ctx(self) -> RotationContext:
        return RotationContext(
            "mailer", uuid.uuid4().hex, SECRET, "single-user", {}, PasswordPolicy(),
            read_secret=lambda _s: None,  # type: ignore[arg-type,return-value]
            read_stage=lambda stage: self.store.get(SECRET, stage),
        )  # fmt: skip

    def current(self) -> Credential:
        credential = self.store.get(SECRET)
        assert credential is not None
        return credential

    def close(self) -> None:
        self.store.close()
        self.journal.close()
        self.fake.stop()


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_throwaway_tls(tmp_path / "tls")


@pytest.fixture
def https_rig(tmp_path: Path, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    rig = Rig(tmp_path, FakeSendGrid().serve(tls=tls), monkeypatch)
    yield rig
    rig.close()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    rig = Rig(tmp_path, FakeSendGrid().serve(), monkeypatch)
    yield rig
    rig.close()


# -- TLS -----------------------------------------------------------------------------------------------------------


def test_https_with_the_ca_bundle_rotates(https_rig: Rig, tls: TlsFiles) -> None:
    rig = https_rig
    assert rig.fake.url.startswith("https://")
    plugin = rig.plugin(ca_bundle=str(tls.ca_cert.relative_to(rig.tmp)))  # relative to the config file's folder
    outcome = Runner(rig.journal).rotate(rig.bound(plugin), revoke_old_now=True)
    assert outcome.outcome == "succeeded", outcome.error
    assert rig.fake.is_valid(rig.current()["api_key"]) and not rig.fake.is_valid(rig.seeded["api_key"])
    assert set(rig.fake.keys) == {rig.admin_id, rig.current()["key_id"]}


def test_https_without_the_ca_bundle_fails_clearly_and_is_not_retried(https_rig: Rig) -> None:
    rig = https_rig
    with pytest.raises(StepError) as caught:
        rig.plugin().create(rig.ctx(), rig.current())
    text = str(caught.value)
    assert not isinstance(caught.value, TransientError)
    assert "TLS verification of 127.0.0.1 failed" in text and "set ca_bundle" in text and "POST /v3/api_keys" in text
    assert rig.fake.requests == [] and rig.sleeps == []  # nothing reached the server; nothing was retried
    # Through the engine: the first call (reconcile's list) fails before the create call was made, so nothing was
    # minted and the create step is "refused": the run rolls back cleanly, with the fix, and needs no `resume`.
    outcome = Runner(rig.journal).rotate(rig.bound(rig.plugin()))
    assert outcome.outcome == "rolled_back" and "TLS verification" in (outcome.error or "")
    assert "set ca_bundle" in (outcome.fix or "")
    [run] = rig.journal.runs()
    assert [(s.step.value, s.status) for s in run.steps] == [("create", "refused")]
    assert rig.current()["key_id"] == rig.seeded["key_id"] and rig.store.get(SECRET, Stage.PENDING) is None


# -- the transport's retry policy ------------------------------------------------------------------------------


def test_retry_after_as_an_http_date_and_server_errors(rig: Rig) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    rig.fake.fail("/v3/api_keys", 429, times=1, method="POST", retry_after=when)
    rig.fake.fail("/v3/api_keys", 500, times=1, method="POST")
    value = rig.plugin().create(rig.ctx(), rig.current())
    assert rig.fake.is_valid(value["api_key"])
    assert len(rig.fake.calls("POST", "/v3/api_keys")) == 3
    assert 3 <= rig.sleeps[0] <= 5  # the date, less the time since it was written
    assert rig.sleeps[1] < 1  # a 500 without Retry-After: a short jittered backoff


def test_connection_refused_is_transient_after_the_attempts(rig: Rig) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    plugin = rig.plugin(base_url=f"http://127.0.0.1:{port}", max_attempts=2)
    with pytest.raises(TransientError, match=r"cannot reach 127\.0\.0\.1 \(ConnectionError\) \(2 tries\)"):
        plugin.create(rig.ctx(), rig.current())
    assert len(rig.sleeps) == 1


def test_the_transport_refuses_plain_http_unless_allowed() -> None:
    with pytest.raises(ValueError, match="must use https://"):
        HttpTransport("acme", "http://api.example.test", HttpOptions())
    assert HttpTransport("acme", "http://127.0.0.1:1", HttpOptions(allow_plain_http=True)).base_url


# -- secrets ---------------------------------------------------------------------------------------------------


class EchoingSendGrid(FakeSendGrid):
    """A vendor that echoes the caller's credential in its error text (some do): the error must not carry it."""

    def handle(self, request: Request) -> Response:
        if request.method == "POST":
            raise HttpError(400, f"bad request from {request.headers.get('Authorization')}")
        return super().handle(request)


def test_a_vendor_error_text_is_scrubbed_of_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(tmp_path, EchoingSendGrid().serve(), monkeypatch)
    try:
        with pytest.raises(StepError) as caught:
            rig.plugin().create(rig.ctx(), rig.current())
        admin_key = next(k.api_key for k in rig.fake.keys.values() if k.api_key_id == rig.admin_id)
        text = str(caught.value)
        assert "refused POST /v3/api_keys with 400: bad request from Bearer [REDACTED]" in text
        assert admin_key not in text
    finally:
        rig.close()


def test_the_new_key_is_registered_before_anything_can_log_it(rig: Rig) -> None:
    """A create whose response lacks the id (a config error) must not show the key it did get."""
    plugin = rig.plugin(create={**http_api_key_options(rig.fake.url, "env:X")["create"], "id_path": "nope"})
    with pytest.raises(StepError, match="without an id at 'nope'") as caught:
        plugin.create(rig.ctx(), rig.current())
    minted = [k for k in rig.fake.keys.values() if k.name.startswith("rotator:mailer:")]
    assert len(minted) == 1 and minted[0].api_key not in str(caught.value)
    from rotator import scrub

    assert scrub(minted[0].api_key) == "[REDACTED]"
    # The stray is the next reconcile's: it carries the plan's prefix and no stored version holds it.
    assert rig.plugin().reconcile(rig.ctx(), [rig.current()]) == [minted[0].api_key_id]


def test_admin_values_are_registered_for_scrubbing(rig: Rig) -> None:
    from rotator import scrub

    rig.plugin().create(rig.ctx(), rig.current())
    admin_key = next(k.api_key for k in rig.fake.keys.values() if k.api_key_id == rig.admin_id)
    assert scrub(f"x {admin_key} y") == "x [REDACTED] y"


# -- the rotator command --------------------------------------------------------------------------------------------


def test_cli_validate_names_the_bad_option(tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text("""
[rotator]
state_dir = "state"

[[plans]]
id = "mailer"
secret = "app/mailer"

[plans.plugin]
type = "http-api-key"
base_url = "https://api.sendgrid.com"
admin = { token = "env:SENDGRID_ADMIN_KEY" }
create = { method = "POST", url = "/v3/api_keys/{current.__dict__}", key_path = "api_key", id_path = "api_key_id" }
test = { url = "/v3/scopes", headers = { Authorization = "Bearer {key.api_key}" } }
revoke = { method = "DELETE", url = "/v3/api_keys/{key.key_id}" }
""")
    result = CliEnv(tmp_path, config).run("validate")
    assert result.code == 2, result.stdout + result.stderr
    assert "plans[0] (id 'mailer').plugin.create.url" in result.stderr and "{root.field}" in result.stderr


def test_cli_rotation_over_https_with_a_private_ca(tmp_path: Path, tls: TlsFiles) -> None:
    fake = FakeSendGrid().serve(tls=tls)
    try:
        admin = fake.add_key("ops admin", ADMIN_SCOPES)
        seed = fake.add_key("mailer", {"mail.send"})
        config = tmp_path / "rotator.toml"
        config.write_text(f"""
[rotator]
state_dir = "state"

[[plans]]
id = "mailer"
secret = "app/mailer"
grace = "1h"

[plans.plugin]
type = "http-api-key"
base_url = "{fake.url}"
ca_bundle = "tls/ca.pem"
admin = {{ token = "env:MAILER_ADMIN_KEY" }}
create = {{ method = "POST", url = "/v3/api_keys", headers = {{ Authorization = "Bearer {{admin.token}}" }}, json = {{ name = "{{name}}", scopes = ["mail.send"] }}, expect = [201], key_path = "api_key", id_path = "api_key_id" }}
test = {{ url = "/v3/scopes", headers = {{ Authorization = "Bearer {{key.api_key}}" }} }}
revoke = {{ method = "DELETE", url = "/v3/api_keys/{{key.key_id}}", headers = {{ Authorization = "Bearer {{admin.token}}" }}, expect = [204] }}
list = {{ url = "/v3/api_keys?limit=100", headers = {{ Authorization = "Bearer {{admin.token}}" }}, items_path = "result", id_path = "api_key_id" }}
""")  # noqa: E501 (TOML inline tables are one line)
        env = {"MAILER_ADMIN_KEY": admin.api_key}
        cli = CliEnv(tmp_path, config)
        assert cli.run("init").code == 0
        cli.seed("app/mailer", {"key_id": seed.api_key_id, "api_key": seed.api_key, "name": seed.name})
        first = cli.run("rotate-now", "mailer", "--json", "--log-level", "debug", env=env)
        assert first.code == 0, first.stdout + first.stderr
        second = cli.run("rotate-now", "mailer", "--revoke-old", "now", "--json", "--log-level", "debug", env=env)
        assert second.code == 0, second.stdout + second.stderr
        current = cli.run("store", "get", "app/mailer").json()
        assert set(fake.keys) == {admin.api_key_id, current["key_id"]}  # the seed and the first new key revoked
        assert fake.keys[current["key_id"]].scopes == {"mail.send"}
        text = first.stdout + first.stderr + second.stdout + second.stderr
        files = b"".join(p.read_bytes() for p in cli.state_files())
        for secret in (admin.api_key, seed.api_key, current["api_key"]):
            assert secret not in text and secret.encode() not in files
        assert "POST /v3/api_keys" in text  # the debug log names the calls (never their headers or bodies)
    finally:
        fake.stop()


def test_reconcile_without_a_list_request_deletes_nothing(rig: Rig) -> None:
    plugin = rig.plugin(list=None)
    orphan = plugin.create(rig.ctx(), rig.current())
    assert plugin.reconcile(rig.ctx(), [rig.current()]) == []
    assert orphan["key_id"] in rig.fake.keys
    assert rig.store.get(SECRET, Stage.PENDING) is None
