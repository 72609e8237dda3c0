"""Invariant 6 end to end: a vendor that echoes every credential it receives, in every form (tests/fakes/echo_vendor.py,
a deliberately hostile fake), and no piece of 12 characters of any form of any secret in any output or state file.

One http-api-key plan per echoed form: the key under test travels in the query string (secret_in_url = true, as
vendors that take it only there need), or in HTTP Basic auth, and the vendor answers each test (or, for the admin
forms, each create) with an error body holding the key or the admin token in that form. The real `rotator` command
then runs the daemon (JSON logs at debug level, so urllib3's request lines with the URL are written too, and the
/metrics and /healthz pages are scraped), rotate-now (text and --json, at debug level), --dry-run (which probes the
live CURRENT key), status, history and resume, text and --json. Every stdout and stderr, every scraped page and every
file under the state directory (journal, its WAL, the store and its key) is searched for every 12-character piece of
every encoding in tests/secret_forms.py of every key the vendor ever minted and of the admin token.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.components import ComponentSetup
from rotator.local_store import LocalStore
from tests.cli_env import CliEnv, Result
from tests.fakes.echo_vendor import ECHO_FORMS, FakeEchoVendor
from tests.secret_forms import ENCODINGS, all_pieces, pieces_in

ADMIN_TOKEN = "adm/Tok+" + "".join(secrets.choice(string.ascii_letters + string.digits + "/+=&% ") for _ in range(30))
ADMIN_FORMS = ("raw", "quote_plus", "base64", "json-slash", "truncated")
ENV = {"ECHO_ADMIN_TOKEN": ADMIN_TOKEN}


def toml_value(value: Any) -> str:
    """A value as TOML: JSON's strings (\\uXXXX escapes) and numbers are TOML's; tables become inline tables."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def plugin(base_url: str, *, test: dict[str, Any], create_url: str = "/v1/keys") -> dict[str, Any]:
    admin = {"Authorization": "Bearer {admin.token}"}
    return {
        "type": "http-api-key",
        "base_url": base_url,
        "allow_plain_http": True,
        "secret_in_url": True,
        "propagation_timeout": 0,
        "max_attempts": 1,
        "admin": {"token": "env:ECHO_ADMIN_TOKEN"},
        "create": {
            "url": create_url,
            "headers": admin,
            "json": {"name": "{name}"},
            "expect": [201],
            "key_path": "data.key",
            "id_path": "data.id",
        },
        "test": test,
        "revoke": {"url": "/v1/keys/{key.key_id}", "headers": admin, "expect": [204]},
        "list": {"url": "/v1/keys", "headers": admin, "items_path": "data"},
    }


def plans(base_url: str) -> dict[str, dict[str, Any]]:
    """Plan id -> its plugin table: one per form the vendor echoes."""
    found = {
        f"key-{form}": plugin(base_url, test={"url": f"/v1/whoami?echo={form}&api_key={{key.api_key}}"})
        for form in ECHO_FORMS
    }
    found["key-basic-auth"] = plugin(
        base_url, test={"url": "/v1/whoami?echo=header", "basic_auth": ["user", "{key.api_key}"]}
    )
    for form in ADMIN_FORMS:
        found[f"admin-{form}"] = plugin(
            base_url, test={"url": "/v1/whoami?api_key={key.api_key}"}, create_url=f"/v1/keys?echo=admin-{form}"
        )
    return found


def json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)


def json_text(text: str) -> str:
    """Every string in `text` read as one JSON document or as JSON lines, one per line; "" when it is neither."""
    documents: list[Any] = []
    try:
        documents.append(json.loads(text))
    except ValueError:
        for line in text.splitlines():
            try:
                documents.append(json.loads(line))
            except ValueError:
                continue
    return "\n".join(piece for document in documents for piece in json_strings(document))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def vendor() -> Iterator[FakeEchoVendor]:
    fake = FakeEchoVendor(ADMIN_TOKEN).serve()
    assert isinstance(fake, FakeEchoVendor)
    yield fake
    fake.stop()


@pytest.fixture
def rig(tmp_path: Path, vendor: FakeEchoVendor) -> tuple[CliEnv, dict[str, dict[str, Any]], int]:
    port = free_port()
    declared = plans(vendor.url)
    text = (
        f'[rotator]\nstate_dir = "state"\ncatch_up_spread_seconds = 0\nrevoke_sweep_seconds = 1\n'
        f'metrics_address = "127.0.0.1:{port}"\n'
    )
    for plan_id, table in declared.items():
        text += (
            f'\n[[plans]]\nid = "{plan_id}"\nsecret = "app/{plan_id}"\nschedule = "rate(1 day)"\ngrace = "0"\n'
            f"plugin = {toml_value(table)}\n"
        )
    config = tmp_path / "rotator.toml"
    config.write_text(text)
    cli = CliEnv(tmp_path, config)
    assert cli.run("validate", env=ENV).code == 0
    assert cli.run("init", env=ENV).code == 0
    store = LocalStore({}, ComponentSetup(name="local", config_dir=tmp_path, state_dir=tmp_path / "state"))
    for plan_id in declared:  # CURRENT: a live key the vendor minted, as an operator would seed it
        key = vendor.add_key(f"seed-{plan_id}")
        store.put_current(f"app/{plan_id}", {"key_id": key.id, "api_key": key.key, "name": key.name})
    store.close()
    return cli, declared, port


def run_daemon(cli: CliEnv, plan_ids: list[str], port: int) -> tuple[str, list[str]]:
    """The daemon until every plan has a finished run; its logs and the scraped pages. Its output goes to a file
    (debug logs would fill a pipe nobody reads and block the daemon)."""
    log_path = cli.root / "daemon.log"
    pages: list[str] = []
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rotator", "daemon", "--json-logs", "--log-level", "debug", "-c", str(cli.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ENV},
            cwd=cli.root,
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                runs = cli.run("history", "--json", "-n", "100").json()
                if {r["plan"] for r in runs if r["state"] == "rolled_back"} >= set(plan_ids):
                    break
                time.sleep(0.5)
            else:
                pytest.fail("the daemon did not run every plan")
            for page in ("metrics", "healthz"):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{page}", timeout=10) as response:
                        pages.append(response.read().decode())
                except urllib.error.HTTPError as exc:  # /healthz may be 503; its body counts all the same
                    pages.append(exc.read().decode())
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    text = log_path.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text, pages


def test_no_form_of_any_secret_in_any_output_or_state_file(
    rig: tuple[CliEnv, dict[str, dict[str, Any]], int], vendor: FakeEchoVendor
) -> None:
    cli, declared, port = rig
    plan_ids = list(declared)
    daemon_log, pages = run_daemon(cli, plan_ids, port)
    outputs: dict[str, str] = {"daemon log": daemon_log, **{f"page {i}": page for i, page in enumerate(pages)}}
    results: dict[str, Result] = {}
    for name, args in {
        "rotate-now": ("rotate-now", "--all", "--log-level", "debug"),
        "rotate-now --json": ("rotate-now", "--all", "--json", "--log-level", "debug"),
        "rotate-now --revoke-old now": ("rotate-now", "key-quote", "--revoke-old", "now", "--reason", "leak"),
        "dry-run": ("rotate-now", "--all", "--dry-run", "--log-level", "debug"),
        "dry-run --json": ("rotate-now", "--all", "--dry-run", "--json"),
        "status": ("status",),
        "status --json": ("status", "--json"),
        "history": ("history", "-n", "200"),
        "history --json": ("history", "-n", "200", "--json"),
        "history of one plan": ("history", "key-query", "--json"),
        "resume": ("resume", "--json"),
    }.items():
        results[name] = result = cli.run(*args, env=ENV)
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = result.stdout, result.stderr
    state_files = sorted(p for p in (cli.root / "state").rglob("*") if p.is_file())
    for path in state_files:  # bytes as Latin-1 text: one character per byte, UTF-8 forms encoded alike below
        outputs[f"file {path.name}"] = path.read_bytes().decode("latin-1")

    # JSON output escapes once more what an echo escaped already ("\\u00e9" for a JSON-echoed key's é): each JSON
    # document and JSON log line is searched decoded as well, as whoever reads it would see it.
    outputs.update(
        {f"{name} (decoded)": decoded for name, text in list(outputs.items()) if (decoded := json_text(text))}
    )

    secrets_known = [*vendor.minted, ADMIN_TOKEN]
    pieces = all_pieces(secrets_known)
    pieces.update(all_pieces(s.encode().decode("latin-1") for s in secrets_known if not s.isascii()))
    leaks = {name: pieces_in(text, pieces) for name, text in outputs.items()}
    assert {name: found[:3] for name, found in leaks.items() if found} == {}

    # The test saw what it claims: every form was echoed, every run failed on the echo and says so redacted,
    # the request lines that carry the key in their URL were logged (scrubbed), and every state file was read.
    assert set(vendor.echoes) >= {*ECHO_FORMS, "header", *(f"admin-{form}" for form in ADMIN_FORMS)}
    assert len(vendor.minted) > 2 * len(plan_ids)  # seeds, the daemon's runs, rotate-now's
    rotated = results["rotate-now --json"].json()["results"]
    assert {r["plan"]: r["outcome"] for r in rotated} == dict.fromkeys(plan_ids, "rolled_back")
    assert all("[REDACTED]" in (r["error"] or "") for r in rotated), [r["error"] for r in rotated]
    dry = results["dry-run --json"].json()["results"]
    assert all("[REDACTED]" in (r["error"] or "") for r in dry if r["plan"].startswith("key-")), [
        r["error"] for r in dry
    ]
    history = results["history --json"].json()
    assert all("[REDACTED]" in (run["error"] or "") for run in history)
    assert "/v1/whoami?echo=" in outputs["rotate-now stderr"] and "/v1/whoami?echo=" in daemon_log
    for line in daemon_log.splitlines():  # structlog, urllib3 and APScheduler alike: JSON lines
        json.loads(line)
    assert {p.name for p in state_files} >= {"journal.db", "store.db", "store.key"}
    assert {"daemon log (decoded)", "rotate-now --json stdout (decoded)", "dry-run --json stdout (decoded)"} <= set(
        outputs
    )
    assert len(ENCODINGS) >= 17
