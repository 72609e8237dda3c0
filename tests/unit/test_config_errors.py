"""Bad configs: one clear message naming the file, the key and the fix; exit 2; no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rotator.cli import app

ROOT = Path(__file__).resolve().parents[2]
GOOD_PLAN = """
[[plans]]
id = "orders-db"
plugin = "postgres"
secret = "prod/orders/db"
schedule = "rate(30 days)"
"""

# (name, config text, words the message must contain: the key, and the fix)
BAD = [
    ("malformed-toml", "[rotator\nstate_dir = 1", ["line 1", "invalid TOML", "fix:"]),
    (
        "unknown-plugin",
        GOOD_PLAN.replace('"postgres"', '"postgress"'),
        ["plans[0] (id 'orders-db').plugin", "unknown plugin type 'postgress'", "installed:", "fix:"],
    ),
    (
        "unknown-store",
        GOOD_PLAN + 'store = "vault"\n',
        ["plans[0] (id 'orders-db').store", "unknown store 'vault'", "fix: declare [stores.vault]"],
    ),
    (
        "unknown-store-type",
        '[stores.s3]\ntype = "s3"\n' + GOOD_PLAN,
        ["stores.s3.type", "unknown store type 's3'", "fix:"],
    ),
    (
        "bad-rate",
        GOOD_PLAN.replace("rate(30 days)", "rate(30 dayz)"),
        ["plans[0] (id 'orders-db').schedule", 'fix: use "rate(30 days)"'],
    ),
    ("rate-singular", GOOD_PLAN.replace("rate(30 days)", "rate(1 days)"), ["schedule", "AWS wants rate(1 day)"]),
    (
        "aws-cron-two-day-fields",
        GOOD_PLAN.replace("rate(30 days)", "cron(0 2 * * MON *)"),
        ["schedule", 'needs "?" in exactly one of day-of-month and day-of-week'],
    ),
    ("crontab-bad-hour", GOOD_PLAN.replace("rate(30 days)", "0 25 * * *"), ["schedule", "fix:"]),
    (
        "missing-secret",
        GOOD_PLAN.replace('secret = "prod/orders/db"\n', ""),
        ["plans[0] (id 'orders-db').secret", "Field required", "fix: add secret = ..."],
    ),
    (
        "unknown-key",
        GOOD_PLAN + 'shedule = "manual"\n',
        ["plans[0] (id 'orders-db').shedule", "did you mean 'schedule'?", "fix: write schedule instead of shedule"],
    ),
    (
        "inline-secret-notifier",
        '[notifiers.ops]\ntype = "webhook"\nurl = "https://x.example"\nsigning_key = "hunter2hunter2"\n' + GOOD_PLAN,
        ["notifiers.ops.signing_key", "a secret is written inline", 'signing_key = "env:VAR"'],
    ),
    (
        "inline-secret-plugin",
        GOOD_PLAN.replace('"postgres"', '{type = "postgres", password = "hunter2"}'),
        ["plans[0].plugin.password", "a secret is written inline"],
    ),
    (
        "unknown-notifier",
        GOOD_PLAN + 'notify = ["pager"]\n',
        ["plans[0] (id 'orders-db').notify", "unknown notifier 'pager'", "fix:"],
    ),
    (
        "bad-strategy",
        GOOD_PLAN + 'strategy = "triple-user"\n',
        ["plans[0] (id 'orders-db').strategy", "no strategy 'triple-user'", "single-user, alternating-users"],
    ),
    ("bad-grace", GOOD_PLAN + 'grace = "one hour"\n', ["grace", "bad duration", 'fix: use a duration such as "1h"']),
    ("bad-window", GOOD_PLAN + 'window = "25:00-26:00"\n', ["window", 'fix: use "HH:MM-HH:MM"']),
    ("duplicate-plan", GOOD_PLAN + GOOD_PLAN, ["plan id 'orders-db' is used twice"]),
    (
        "bad-plugin-option",
        GOOD_PLAN.replace('"postgres"', '{type = "postgres", conect_timeout = 3}'),
        ["plans[0] (id 'orders-db').plugin.conect_timeout", "fix: remove 'conect_timeout'"],
    ),
    ("bad-plan-id", GOOD_PLAN.replace('"orders-db"', '"orders db!"'), ["plans[0]", "bad plan id", "fix: use letters"]),
    (
        "webhook-plain-http",
        '[notifiers.ops]\ntype = "webhook"\nurl = "ftp://x"\n' + GOOD_PLAN,
        ["notifiers.ops.url", "url must start with https://"],
    ),
    (
        "journal-url-with-password",
        '[rotator]\njournal = "postgresql://u:hunter2@db/x"\n' + GOOD_PLAN,
        ["rotator.journal", "holds a password", "PGPASSWORD"],
    ),
    (
        "unknown-journal",
        '[rotator]\njournal = "mongodb://x"\n' + GOOD_PLAN,
        ["rotator.journal", "unknown journal URL scheme", "sqlite:///PATH"],
    ),
]


@pytest.mark.parametrize(("name", "text", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_named_and_exits_2(tmp_path: Path, name: str, text: str, words: list[str]) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(text)
    command = ["validate", "--config", str(path)]
    if name == "unknown-journal":
        command = ["status", "--config", str(path)]
    result = CliRunner().invoke(app, command)
    message = result.output
    assert result.exit_code == 2, message
    assert str(path) in message, "the message names the file"
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "Traceback" not in message
    assert "hunter2" not in message


def test_design_example_validates_as_written(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config" / "design-example.toml", tmp_path / "rotator.toml")
    result = CliRunner().invoke(app, ["validate", "--config", str(tmp_path / "rotator.toml"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"plans": 1' in result.output


def test_design_example_is_verbatim_from_design_md() -> None:
    # CI clones the repo with shared/ beside it; elsewhere look for the workplace's copy.
    candidates = [ROOT.parent / "shared" / "DESIGN.md", Path("/work/shared/DESIGN.md")]
    design = next((path for path in candidates if path.exists()), None)
    if design is None:
        pytest.skip("shared/DESIGN.md is not beside this checkout")
    block = design.read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    ours = (ROOT / "config" / "design-example.toml").read_text()
    assert block.strip() in ours


def test_example_config_validates() -> None:
    result = CliRunner().invoke(app, ["validate", "--config", str(ROOT / "config" / "example.toml")])
    assert result.exit_code == 0, result.output


def test_missing_config_file_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rotator", "status", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "nope.toml: config file not found" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_typer_usage_error_exits_2() -> None:
    assert CliRunner().invoke(app, ["rotate-now", "--concurrency", "0"]).exit_code == 2


def test_json_schema_in_config_is_current() -> None:
    import json

    from rotator.config import json_schema

    on_disk = json.loads((ROOT / "config" / "rotator.schema.json").read_text())
    assert on_disk == json.loads(json.dumps(json_schema())), (
        "run: python -m rotator.config > config/rotator.schema.json"
    )


def test_validate_reports_every_problem_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(
        "[rotatr]\n\n[rotator]\nstat_dir = 'x'\n"
        + GOOD_PLAN.replace("rate(30 days)", "rate(30 dayz)")
        + 'store = "lokal"\n'
        + GOOD_PLAN.replace("orders-db", "billing-db").replace('"postgres"', '"generated"')
        + 'grace = "soon"\npassword_policy = {lenght = 40}\n'
    )
    result = CliRunner().invoke(app, ["validate", "--config", str(path)])
    assert result.exit_code == 2
    assert "6 problems" in result.output
    for key, words in [
        ("rotatr", "did you mean 'rotator'?"),
        ("rotator.stat_dir", "did you mean 'state_dir'?"),
        ("plans[0] (id 'orders-db').schedule", "not a rate(...)"),
        ("plans[0] (id 'orders-db').store", "unknown store 'lokal'"),
        ("plans[1] (id 'billing-db').grace", "bad duration 'soon'"),
        ("plans[1] (id 'billing-db').password_policy.lenght", "did you mean 'length'?"),
    ]:
        line = next((line for line in result.output.splitlines() if line.strip().startswith(key + ":")), None)
        assert line is not None and words in line, f"{key}: {words!r} not in {result.output}"
    as_json = CliRunner().invoke(app, ["validate", "--config", str(path), "--json"])
    document = json.loads(as_json.stdout)
    assert as_json.exit_code == 2 and document["error"] == "6 problems"
    assert {p["key"] for p in document["problems"]} >= {"rotatr", "plans[1] (id 'billing-db').grace"}
    assert all(p["fix"] and p["file"] == str(path) for p in document["problems"])


def test_the_config_model_has_no_validator_that_load_config_would_skip() -> None:
    from rotator.config import ConfigModel

    # load_config builds ConfigModel with model_construct; its only validator (duplicate ids) is repeated there.
    assert set(ConfigModel.__pydantic_decorators__.model_validators) == {"_references"}
