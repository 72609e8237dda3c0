"""Config that would destroy or expose data, or that no code path can run: refused when the config is loaded (every
command loads it), with one message naming the file, the key and the fix; exit 2; never "unexpected", never a
traceback, never a secret in the message. And the near misses that must still be accepted.

Each variant goes through the real `rotator validate` (typer's CliRunner, in this process); those refused at load are
also run through `rotator status`, which loads the same config and builds no component.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rotator.cli import app

PLAN = """
[[plans]]
id = "app-key"
plugin = "generated"
secret = "app/key"
"""
PLAN_KEY = "plans[0] (id 'app-key')"
SECRET_WORD = "hunter2hunter2"  # a password some variants put where it must not be; never in any output


def plan(extra: str) -> str:
    return PLAN + extra + "\n"


def rotator(extra: str) -> str:
    return f"[rotator]\n{extra}\n" + PLAN


EVERY_PRINTABLE = json.dumps(string.ascii_letters + string.digits + string.punctuation)

# (name, config text, words the message must contain: the key, the reason, the fix)
LOAD_REFUSED: list[tuple[str, str, list[str]]] = [
    # -- durations: finite, not negative, at most 365 days (timedelta overflowed: "unexpected OverflowError") --
    ("grace-1e308", plan("grace = 1e308"), [f"{PLAN_KEY}.grace", "longer than 365 days"]),
    ("grace-11-digit-days", plan('grace = "99999999999d"'), [f"{PLAN_KEY}.grace", "longer than 365 days"]),
    ("grace-inf", plan("grace = inf"), [f"{PLAN_KEY}.grace", "finite"]),
    ("grace-nan", plan("grace = nan"), [f"{PLAN_KEY}.grace", "finite"]),
    ("grace-negative", plan("grace = -1"), [f"{PLAN_KEY}.grace", "cannot be negative"]),
    ("grace-400-days", plan('grace = "400d"'), [f"{PLAN_KEY}.grace", "longer than 365 days"]),
    ("grace-30-digits", plan(f'grace = "{"9" * 30}s"'), [f"{PLAN_KEY}.grace", "bad duration"]),
    ("revoke-deadline-inf", plan("revoke_deadline = inf"), [f"{PLAN_KEY}.revoke_deadline", "finite"]),
    ("revoke-deadline-1e308", plan("revoke_deadline = 1e308"), [f"{PLAN_KEY}.revoke_deadline", "365 days"]),
    ("notify-retry-for-1e300", rotator("notify_retry_for = 1e300"), ["rotator.notify_retry_for", "365 days"]),
    ("notify-retry-for-text-inf", rotator('notify_retry_for = "inf"'), ["rotator.notify_retry_for", "bad duration"]),
    # -- [rotator] numbers: finite and at most a day (inf passed, nan gave a confusing message) ------------------
    ("step-timeout-inf", rotator("step_timeout = inf"), ["rotator.step_timeout", "finite number"]),
    ("step-timeout-nan", rotator("step_timeout = nan"), ["rotator.step_timeout", "finite number"]),
    ("step-timeout-1e308", rotator("step_timeout = 1e308"), ["rotator.step_timeout", "less than or equal to 86400"]),
    ("step-timeout-0", rotator("step_timeout = 0"), ["rotator.step_timeout", "greater than 0"]),
    ("lease-seconds-inf", rotator("lease_seconds = inf"), ["rotator.lease_seconds", "finite number"]),
    ("lease-seconds-nan", rotator("lease_seconds = nan"), ["rotator.lease_seconds", "finite number"]),
    ("lease-seconds-minus-inf", rotator("lease_seconds = -inf"), ["rotator.lease_seconds", "finite number"]),
    ("lease-seconds-1e308", rotator("lease_seconds = 1e308"), ["rotator.lease_seconds", "86400"]),
    ("revoke-sweep-inf", rotator("revoke_sweep_seconds = inf"), ["rotator.revoke_sweep_seconds", "finite"]),
    ("catch-up-negative", rotator("catch_up_spread_seconds = -1"), ["rotator.catch_up_spread_seconds", "0"]),
    ("catch-up-1e308", rotator("catch_up_spread_seconds = 1e308"), ["rotator.catch_up_spread_seconds", "86400"]),
    ("notify-retry-nan", rotator("notify_retry_seconds = nan"), ["rotator.notify_retry_seconds", "finite"]),
    ("revoke-recheck-inf", rotator("revoke_recheck_seconds = inf"), ["rotator.revoke_recheck_seconds", "finite"]),
    ("concurrency-1e9", rotator("concurrency = 1e9"), ["rotator.concurrency", "256"]),
    # -- schedules: rates of at most 1000 days, cron dates that occur ----------------------------------------
    ("rate-14-digit-days", plan('schedule = "rate(99999999999999 days)"'), [f"{PLAN_KEY}.schedule", "1000 days"]),
    ("rate-1001-days", plan('schedule = "rate(1001 days)"'), [f"{PLAN_KEY}.schedule", "1000 days"]),
    ("rate-minutes-over", plan('schedule = "rate(1440001 minutes)"'), [f"{PLAN_KEY}.schedule", "1000 days"]),
    ("rate-hours-over", plan('schedule = "rate(24001 hours)"'), [f"{PLAN_KEY}.schedule", "1000 days"]),
    ("cron-february-30", plan('schedule = "cron(0 0 30 2 ? *)"'), [f"{PLAN_KEY}.schedule", "matches no date"]),
    ("cron-april-31", plan('schedule = "cron(0 0 31 4 ? *)"'), [f"{PLAN_KEY}.schedule", "matches no date"]),
    ("cron-past-year", plan('schedule = "cron(0 0 1 1 ? 2020)"'), [f"{PLAN_KEY}.schedule", "matches no date"]),
    ("crontab-february-30", plan('schedule = "0 0 30 2 *"'), [f"{PLAN_KEY}.schedule", "matches no date"]),
    ("crontab-november-31", plan('schedule = "0 0 31 11 *"'), [f"{PLAN_KEY}.schedule", "matches no date"]),
    # -- windows of no length (it meant a whole day before) ---------------------------------------------------
    ("window-02-02", plan('window = "02:00-02:00"'), [f"{PLAN_KEY}.window", "has no length"]),
    ("window-00-00", plan('window = "00:00-00:00"'), [f"{PLAN_KEY}.window", "has no length"]),
    ("window-spaced", plan('window = "23:59 - 23:59"'), [f"{PLAN_KEY}.window", "has no length"]),
    # -- password policies that leave no characters (refused only at create before) -------------------------
    (
        "policy-every-class-excluded",
        plan(
            "password_policy = { exclude_lowercase = true, exclude_uppercase = true, exclude_numbers = true, "
            "exclude_punctuation = true }"
        ),
        [f"{PLAN_KEY}.password_policy", "no characters"],
    ),
    (
        "policy-every-character-excluded",
        plan(f"password_policy = {{ exclude_characters = {EVERY_PRINTABLE} }}"),
        [f"{PLAN_KEY}.password_policy", "no characters"],
    ),
    (
        "policy-rest-excluded-by-characters",
        plan(
            "password_policy = { exclude_lowercase = true, exclude_uppercase = true, exclude_numbers = true, "
            f"exclude_characters = {json.dumps(string.punctuation)} }}"
        ),
        [f"{PLAN_KEY}.password_policy", "no characters"],
    ),
    ("policy-length-5000", plan("password_policy = { length = 5000 }"), ["password_policy.length", "4096"]),
    ("policy-length-8", plan("password_policy = { length = 8 }"), ["password_policy.length", "12"]),
    # -- wrong top-level types (AttributeError / TypeError: "unexpected" before) -----------------------------
    ("stores-a-string", 'stores = "x"\n' + PLAN, ["stores", "must be a table of tables, not a string"]),
    ("plans-a-number", "plans = 5\n", ["plans", "must be an array of tables, not a number"]),
    ("plans-a-string", 'plans = "orders"\n', ["plans", "must be an array of tables, not a string"]),
    ("plans-a-table", 'plans = { id = "x" }\n', ["plans", "must be an array of tables, not a table"]),
    ("plans-of-numbers", "plans = [1]\n", ["plans[0]", "must be a table, not a number"]),
    ("rotator-a-number", "rotator = 3\n" + PLAN, ["rotator", "must be a table, not a number"]),
    ("rotator-an-array", "rotator = [1]\n" + PLAN, ["rotator", "must be a table, not an array"]),
    ("notifiers-a-number", "notifiers = 3\n" + PLAN, ["notifiers", "must be a table of tables, not a number"]),
    ("store-a-number", "[stores]\nx = 1\n" + PLAN, ["stores.x", "must be a table, not a number"]),
    ("notifier-a-string", '[notifiers]\nn = "webhook"\n' + PLAN, ["notifiers.n", "must be a table, not a string"]),
    # -- a PostgreSQL journal URL holding a password (the query form was accepted, and init printed it) ------
    *(
        (
            f"journal-password-{label}",
            rotator(f'journal = "{url}"'),
            ["rotator.journal", "holds a password", "PGPASSFILE", "PGPASSWORD"],
        )
        for label, url in (
            ("userinfo", f"postgresql://rotator:{SECRET_WORD}@db/rotator"),
            ("query", f"postgresql://rotator@db/rotator?password={SECRET_WORD}"),
            ("query-upper-case", f"postgresql://rotator@db/rotator?PASSWORD={SECRET_WORD}"),
            ("query-encoded-name", f"postgresql://rotator@db/rotator?%70assword={SECRET_WORD}"),
            ("query-among-others", f"postgresql://rotator@db/rotator?sslmode=verify-full&password={SECRET_WORD}"),
            ("sslpassword", f"postgresql://rotator@db/rotator?sslpassword={SECRET_WORD}"),
            ("postgres-scheme", f"postgres://rotator@db/rotator?password={SECRET_WORD}"),
        )
    ),
]


def file_notifier(options: str) -> str:
    return f'[notifiers.render]\ntype = "file"\n{options}\n' + PLAN + 'notify = ["render"]\n'


def require_tls(plugin: str) -> str:
    return f'[rotator]\nrequire_verified_tls = true\n[[plans]]\nid = "db"\nplugin = {plugin}\nsecret = "db/app"\n'


HTTP_API_KEY = {
    "type": "http-api-key",
    "base_url": "https://api.example.test",
    "admin": {"token": "env:EXAMPLE_ADMIN"},
    "create": {"url": "/v1/keys", "headers": {"Authorization": "Bearer {admin.token}"}, "key_path": "key"},
    "test": {"url": "/v1/whoami", "headers": {"Authorization": "Bearer {key.api_key}"}},
    "revoke": {"url": "/v1/keys/{key.key_id}", "headers": {"Authorization": "Bearer {admin.token}"}},
    "list": {"url": "/v1/keys", "headers": {"Authorization": "Bearer {admin.token}"}, "items_path": "data"},
}


def http_plan(request: str, url: str, **more: object) -> str:
    options = json.loads(json.dumps(HTTP_API_KEY))
    options[request]["url"] = url
    options.update(more)
    # TOML inline tables are JSON objects with `=` for `:` (every value here is a string, list or table)
    inline = json.dumps(options).replace('": ', '" = ')
    return f'[[plans]]\nid = "acme"\nsecret = "app/acme"\nplugin = {inline}\n'


# Refused when a component is built from the config: by validate, and by every command that loads that component.
COMPONENT_REFUSED: list[tuple[str, str, list[str]]] = [
    # -- a file notifier writing into state_dir or over the store, its key or the journal -------------------
    ("file-on-store-key", file_notifier('path = "state/store.key"'), ["notifiers.render.path", "store.key"]),
    ("file-on-store-db", file_notifier('path = "state/store.db"'), ["notifiers.render.path", "store.db"]),
    ("file-on-store-wal", file_notifier('path = "state/store.db-wal"'), ["notifiers.render.path", "state"]),
    ("file-in-state-dir", file_notifier('path = "state/app.env"'), ["notifiers.render.path", "state"]),
    ("file-dotdot-into-state", file_notifier('path = "out/../state/x.json"'), ["notifiers.render.path"]),
    (
        "file-on-custom-store-path",
        '[stores.local]\ntype = "local"\npath = "data/secrets.db"\n' + file_notifier('path = "data/secrets.db"'),
        ["notifiers.render.path", "secrets.db"],
    ),
    (
        "file-on-custom-key-file",
        '[stores.local]\ntype = "local"\nkey_file = "keys/store.key"\n' + file_notifier('path = "keys/store.key"'),
        ["notifiers.render.path", "store.key"],
    ),
    (
        "file-reload-cwd-in-state",
        file_notifier('path = "app.env"\nreload = { argv = ["true"], cwd = "state" }'),
        ["notifiers.render.reload.cwd", "state"],
    ),
    (
        "file-reload-writes-key",
        file_notifier('path = "app.env"\nreload = ["cp", "app.env", "state/store.key"]'),
        ["notifiers.render.reload", "store.key"],
    ),
    # -- env files that would set a variable changing how the consumer runs ---------------------------------
    *(
        (
            f"env-sets-{key}",
            file_notifier(f'path = "app.env"\nformat = "env"\nkeys = ["{key}"]'),
            ["notifiers.render.keys", variable, "env_prefix"],
        )
        for key, variable in (
            ("path", "PATH"),
            ("ld_preload", "LD_PRELOAD"),
            ("pythonpath", "PYTHONPATH"),
            ("ifs", "IFS"),
            ("bash_env", "BASH_ENV"),
            ("node_options", "NODE_OPTIONS"),
            ("perl5opt", "PERL5OPT"),
            ("ps4", "PS4"),
            ("glibc_tunables", "GLIBC_TUNABLES"),
        )
    ),
    (
        "env-prefix-itself-dangerous",
        file_notifier('path = "app.env"\nformat = "env"\nkeys = ["preload"]\nenv_prefix = "LD_"'),
        ["notifiers.render.env_prefix", "LD_PRELOAD"],
    ),
    # -- require_verified_tls: a target connection that does not verify TLS ---------------------------------
    ("tls-postgres-unset", require_tls('"postgres"'), ["plans[0] (id 'db').plugin", 'the secret\'s "ssl" field']),
    *(
        (
            f"tls-postgres-{mode}",
            require_tls(f'{{ type = "postgres", sslmode = "{mode}" }}'),
            ["plans[0] (id 'db').plugin", f'sslmode = "{mode}"', "verify-full"],
        )
        for mode in ("prefer", "require", "allow", "disable")
    ),
    *(
        (
            f"tls-mysql-{mode}",
            require_tls(f'{{ type = "mysql", ssl_mode = "{mode}" }}'),
            ["plans[0] (id 'db').plugin", f'ssl_mode = "{mode}"', "verify_identity"],
        )
        for mode in ("preferred", "required", "disabled")
    ),
    ("tls-mysql-unset", require_tls('"mysql"'), ["plans[0] (id 'db').plugin", "ssl_mode is unset"]),
    ("tls-redis-unset", require_tls('"redis"'), ["plans[0] (id 'db').plugin", "tls is unset"]),
    ("tls-redis-required", require_tls('{ type = "redis", tls = "required" }'), ['tls = "required"']),
    # -- http-api-key: a secret placeholder in a URL (the vendor echoes the URL, percent-encoded) -----------
    (
        "secret-in-test-query",
        http_plan("test", "/v1/whoami?api_key={key.api_key}"),
        ["plugin.test.url", "{key.api_key}", "secret_in_url = true"],
    ),
    ("secret-in-test-path", http_plan("test", "/v1/keys/{key.api_key}/whoami"), ["plugin.test.url", "{key.api_key}"]),
    ("admin-in-revoke-url", http_plan("revoke", "/v1/keys/{key.key_id}?t={admin.token}"), ["plugin.revoke.url"]),
    ("current-key-in-list-url", http_plan("list", "/v1/keys?auth={current.api_key}"), ["plugin.list.url"]),
    ("admin-in-create-path", http_plan("create", "/v1/{admin.token}/keys"), ["plugin.create.url", "{admin.token}"]),
    (
        "custom-key-field-in-url",
        http_plan("test", "/v1/whoami?k={key.secret_token}", key_field="secret_token"),
        ["plugin.test.url", "{key.secret_token}"],
    ),
]

VARIANTS = len(LOAD_REFUSED) + len(COMPONENT_REFUSED)


def refused(result_output: str, exit_code: int, path: Path, words: list[str]) -> None:
    assert exit_code == 2, result_output
    assert str(path) in result_output, "the message names the file"
    assert "fix:" in result_output, "the message says how to fix it"
    for word in words:
        assert word in result_output, f"{word!r} not in {result_output!r}"
    assert "unexpected" not in result_output and "Traceback" not in result_output
    assert SECRET_WORD not in result_output


def run(tmp_path: Path, text: str, command: str = "validate") -> tuple[Path, str, int]:
    path = tmp_path / "rotator.toml"
    path.write_text(text)
    result = CliRunner().invoke(app, [command, "--config", str(path)], env={"EXAMPLE_ADMIN": "admin-token-value"})
    return path, result.output, result.exit_code


@pytest.mark.parametrize(("name", "text", "words"), LOAD_REFUSED, ids=[v[0] for v in LOAD_REFUSED])
@pytest.mark.parametrize("command", ["validate", "status"])
def test_refused_at_load(tmp_path: Path, name: str, text: str, words: list[str], command: str) -> None:
    path, output, code = run(tmp_path, text, command)
    refused(output, code, path, words)


@pytest.mark.parametrize(("name", "text", "words"), COMPONENT_REFUSED, ids=[v[0] for v in COMPONENT_REFUSED])
def test_refused_when_the_component_is_built(tmp_path: Path, name: str, text: str, words: list[str]) -> None:
    path, output, code = run(tmp_path, text)
    refused(output, code, path, words)


def test_a_plans_dir_file_of_the_wrong_shape(tmp_path: Path) -> None:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "bad.toml").write_text("plans = 5\n")
    _path, output, code = run(tmp_path, '[rotator]\nplans_dir = "plans"\n')
    assert code == 2 and str(tmp_path / "plans" / "bad.toml") in output and "must be an array of tables" in output


# -- symlinks: the output resolves into the state (the check follows links, at load and at write) ----------------


def _symlinked_file(root: Path) -> str:
    (root / "state").mkdir()
    (root / "state" / "store.key").write_text("k")
    (root / "innocent.env").symlink_to(root / "state" / "store.key")
    return "innocent.env"


def _symlinked_directory(root: Path) -> str:
    (root / "state").mkdir()
    (root / "etc-app").symlink_to(root / "state", target_is_directory=True)
    return "etc-app/app.env"


def _journal_file(root: Path) -> str:
    return str(root / "elsewhere" / "journal.db")


@pytest.mark.parametrize("make", [_symlinked_file, _symlinked_directory, _journal_file])
def test_outputs_resolving_onto_protected_paths(tmp_path: Path, make: Callable[[Path], str]) -> None:
    output_path = make(tmp_path)
    journal = f'[rotator]\njournal = "sqlite:///{tmp_path / "elsewhere" / "journal.db"}"\n'
    path, output, code = run(tmp_path, journal + file_notifier(f'path = "{output_path}"'))
    refused(output, code, path, ["notifiers.render.path", "resolves into or onto"])


def test_the_write_checks_again_when_a_directory_became_a_link(tmp_path: Path) -> None:
    """Accepted at load (a real directory), refused at write once that directory is a link into state_dir."""
    from rotator import NotifyError
    from rotator.config import load_config
    from rotator.workspace import Workspace

    (tmp_path / "out").mkdir()
    (tmp_path / "state").mkdir()
    config = tmp_path / "rotator.toml"
    config.write_text(file_notifier('path = "out/app.json"'))
    notifier = Workspace(load_config(config)).notifier("render")
    (tmp_path / "out").rmdir()
    (tmp_path / "out").symlink_to(tmp_path / "state", target_is_directory=True)
    with pytest.raises(NotifyError, match="now resolves into or onto"):
        notifier.write("{}")  # type: ignore[attr-defined]
    assert list((tmp_path / "state").iterdir()) == []


# -- env names known only at render time --------------------------------------------------------------------------


def test_an_env_file_refuses_a_dangerous_key_of_the_value_at_render(tmp_path: Path) -> None:
    from rotator import NotifyError
    from rotator.config import load_config
    from rotator.workspace import Workspace

    config = tmp_path / "rotator.toml"
    config.write_text(file_notifier('path = "app.env"\nformat = "env"'))
    notifier = Workspace(load_config(config)).notifier("render")
    assert notifier.render({"password": "x" * 20, "username": "app"}) == (  # type: ignore[attr-defined]
        f"PASSWORD={'x' * 20}\nUSERNAME=app\n"
    )
    with pytest.raises(NotifyError) as caught:
        notifier.render({"password": "p" * 20, "ld_library_path": "/tmp/evil"})  # type: ignore[attr-defined]
    assert "'ld_library_path'" in str(caught.value) and "LD_LIBRARY_PATH" in str(caught.value)
    assert "env_prefix" in str(caught.value) and "/tmp/evil" not in str(caught.value) and "ppp" not in str(caught.value)
    assert not (tmp_path / "app.env").exists()


# -- near misses that must stay accepted ------------------------------------------------------------------------

ACCEPTED = [
    ("window-whole-day", plan('window = "00:00-24:00"')),
    ("window-over-midnight", plan('window = "23:00-01:00"')),
    ("cron-february-29", plan('schedule = "cron(0 0 29 2 ? *)"')),
    ("rate-1000-days", plan('schedule = "rate(1000 days)"')),
    ("grace-365-days", plan('grace = "365d"')),
    (
        "policy-only-digits",
        plan("password_policy = { exclude_lowercase = true, exclude_uppercase = true, exclude_punctuation = true }"),
    ),
    (
        "journal-no-password",  # under a shared journal the plan needs a store every host reaches
        rotator('journal = "postgresql://rotator@db/rotator?sslmode=verify-full&passfile=/p"')
        + 'store = "vault"\n\n[stores.vault]\ntype = "vault-kv2"\nurl = "https://vault.internal:8200"\n',
    ),
    ("env-with-prefix", file_notifier('path = "app.env"\nformat = "env"\nkeys = ["path"]\nenv_prefix = "APP_"')),
    ("file-beside-state", file_notifier('path = "state-backup/app.json"')),
    ("secret-in-url-declared", http_plan("test", "/v1/whoami?api_key={key.api_key}", secret_in_url=True)),
    ("id-in-url", http_plan("revoke", "/v1/keys/{key.key_id}")),
    ("tls-verified", require_tls('{ type = "postgres", sslmode = "verify-full" }')),
    ("tls-mysql-verified", require_tls('{ type = "mysql", ssl_mode = "verify_identity" }')),
]


@pytest.mark.parametrize(("name", "text"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_near_misses_are_accepted(tmp_path: Path, name: str, text: str) -> None:
    _path, output, code = run(tmp_path, text)
    assert code == 0, output


def test_unverified_tls_is_a_warning_per_plan_without_require(tmp_path: Path) -> None:
    text = "".join(
        f'[[plans]]\nid = "{plan_id}"\nplugin = {plugin}\nsecret = "db/{plan_id}"\n'
        for plan_id, plugin in (
            ("pg-unset", '"postgres"'),
            ("pg-verified", '{ type = "postgres", sslmode = "verify-full" }'),
            ("pg-require", '{ type = "postgres", sslmode = "require" }'),
            ("my-preferred", '{ type = "mysql", ssl_mode = "preferred" }'),
            ("redis-unset", '"redis"'),
            ("generated", '"generated"'),
        )
    )
    path = tmp_path / "rotator.toml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["validate", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    warnings = [w for w in json.loads(result.output)["warnings"] if "does not verify TLS" in w]
    assert [w.split(".plugin:")[0] for w in warnings] == [
        "plans[0] (id 'pg-unset')",
        "plans[2] (id 'pg-require')",
        "plans[3] (id 'my-preferred')",
        "plans[4] (id 'redis-unset')",
    ]
    assert 'the secret\'s "ssl" field decides' in warnings[0] and 'sslmode = "require"' in warnings[1]


def test_variant_count() -> None:
    """The report quotes this number; it changes only with the tables above."""
    assert VARIANTS == len({v[0] for v in (*LOAD_REFUSED, *COMPONENT_REFUSED)}) >= 90
    assert os.environ.get("ROTATOR_CONFIG") is None  # the CLI runs use --config only
