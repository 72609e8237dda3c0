"""config/rotator.schema.json says what `rotator validate` accepts, as written in TOML.

Every shipped config (config/*.toml) passes both the schema and `rotator validate`; every TOML example in the
README that is a rotator config (or a fragment of one) passes the schema, fragments judged on the keys they have;
and the configs `validate` refuses for their shape (unknown keys, wrong types, bad durations) the schema refuses
too, while the spellings the loader accepts (plugin as a string, "1h" or 3600, "INFO") it accepts.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from rotator.cli import app

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "config" / "rotator.schema.json").read_text())
CONFIG_KEYS = {"rotator", "stores", "notifiers", "plans"}
SHIPPED = sorted((ROOT / "config").glob("*.toml"))


def as_json(value: Any) -> Any:
    """TOML's data as JSON carries it: dates and times as RFC 3339 strings."""
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return value


def errors(data: Any, schema: dict[str, Any] = SCHEMA) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(as_json(data))]


def without_required(node: Any) -> Any:
    """The schema for fragments: every key optional, every other rule kept."""
    if isinstance(node, dict):
        return {key: without_required(value) for key, value in node.items() if key != "required"}
    if isinstance(node, list):
        return [without_required(value) for value in node]
    return node


FRAGMENT_SCHEMA = without_required(copy.deepcopy(SCHEMA))


def test_the_schema_is_itself_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_there_are_shipped_configs() -> None:
    assert {p.name for p in SHIPPED} >= {"example.toml", "design-example.toml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_passes_the_schema_and_validate(path: Path, tmp_path: Path) -> None:
    data = tomllib.loads(path.read_text())
    assert errors(data) == []
    result = CliRunner().invoke(app, ["validate", "--config", str(path)])
    assert result.exit_code == 0, result.output


def readme_examples() -> list[tuple[int, dict[str, Any]]]:
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = []
    for index, block in enumerate(blocks):
        data = tomllib.loads(block)
        if not set(data) <= CONFIG_KEYS:  # a pyproject.toml snippet, say
            continue
        if isinstance(data.get("plans"), dict):  # `[plans.plugin]`: a fragment of one plan's table
            data["plans"] = [data["plans"]]
        found.append((index, data))
    return found


def test_the_readme_has_config_examples() -> None:
    assert len(readme_examples()) >= 4


@pytest.mark.parametrize(("index", "data"), readme_examples(), ids=lambda v: f"block{v}" if isinstance(v, int) else "")
def test_every_readme_example_passes_the_schema(index: int, data: dict[str, Any]) -> None:
    assert errors(data, FRAGMENT_SCHEMA) == [], f"README ```toml block {index}"


def test_complete_readme_examples_pass_validate(tmp_path: Path) -> None:
    # A whole config (its [rotator] or stores, and plans with every required key), not a fragment of one.
    complete = [
        data
        for _i, data in readme_examples()
        if data.get("plans") and {"rotator", "stores"} & set(data) and not errors(data)
    ]
    assert complete, "the README shows at least one complete config"
    for data in complete:
        path = tmp_path / "rotator.toml"
        blocks = [b for b in re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)]
        text = next(b for b in blocks if tomllib.loads(b) == data)
        path.write_text(text)
        result = CliRunner().invoke(app, ["validate", "--config", str(path)])
        assert result.exit_code == 0, result.output


PLAN = {"id": "orders-db", "plugin": "postgres", "secret": "prod/orders/db"}

# Both refuse these (the loader at load, with exit 2).
REFUSED = [
    ("unknown top-level key", {"plan": [PLAN]}),
    ("unknown [rotator] key", {"rotator": {"stat_dir": "x"}}),
    ("unknown plan key", {"plans": [{**PLAN, "shedule": "manual"}]}),
    ("plan without secret", {"plans": [{"id": "x", "plugin": "postgres"}]}),
    ("plan without plugin", {"plans": [{"id": "x", "secret": "s"}]}),
    ("store without type", {"stores": {"local": {"path": "x"}}}),
    ("bad plan id", {"plans": [{**PLAN, "id": "orders db!"}]}),
    ("duration words", {"plans": [{**PLAN, "grace": "one hour"}]}),
    ("negative duration", {"plans": [{**PLAN, "grace": -1}]}),
    ("duration over a year", {"plans": [{**PLAN, "grace": 400 * 86400}]}),
    ("stores not a table", {"stores": "x"}),
    ("plans not an array", {"plans": 5}),
    ("unknown event kind", {"notifiers": {"ops": {"type": "webhook", "events": ["credential.rotate"]}}}),
    ("concurrency 0", {"rotator": {"concurrency": 0}}),
    ("log_level loud", {"rotator": {"log_level": "loud"}}),
    ("log_format", {"rotator": {"log_format": "xml"}}),
    ("journal scheme", {"rotator": {"journal": "mongodb://x"}}),
    ("inline fingerprint key", {"rotator": {"fingerprint_key": "c2VjcmV0"}}),
    ("window words", {"plans": [{**PLAN, "window": "at night"}]}),
    ("unknown password policy key", {"plans": [{**PLAN, "password_policy": {"lenght": 40}}]}),
    ("reconcile sometimes", {"plans": [{**PLAN, "reconcile": "sometimes"}]}),
]

# Both accept these spellings.
ACCEPTED = [
    ("plugin as a string", {"plans": [PLAN]}),
    ("plugin as a table", {"plans": [{**PLAN, "plugin": {"type": "postgres", "connect_timeout": 5}}]}),
    ("duration text", {"plans": [{**PLAN, "grace": "1h30m", "revoke_deadline": "0"}]}),
    ("duration seconds", {"plans": [{**PLAN, "grace": 3600}], "rotator": {"notify_retry_for": "24h"}}),
    ("log level upper case", {"rotator": {"log_level": "INFO", "log_format": "json"}}),
    ("window", {"plans": [{**PLAN, "window": "02:00-04:00"}]}),
    ("env reference", {"rotator": {"fingerprint_key": "env:ROTATOR_FINGERPRINT_KEY"}}),
    ("metrics address", {"rotator": {"metrics_address": "127.0.0.1:9465"}}),
    ("events", {"notifiers": {"ops": {"type": "slack", "webhook_url": "env:X", "events": ["credential.rotated"]}}}),
]


def toml_of(data: dict[str, Any]) -> str:
    """A TOML text for `data` (inline tables, which is all these cases need)."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    return "\n".join(f"{key} = {value(v)}" for key, v in data.items()) + "\n"


@pytest.mark.parametrize(("name", "data"), REFUSED, ids=[r[0] for r in REFUSED])
def test_what_validate_refuses_the_schema_refuses(name: str, data: dict[str, Any], tmp_path: Path) -> None:
    assert errors(data), f"the schema accepts {name}"
    path = tmp_path / "rotator.toml"
    path.write_text(toml_of(data))
    result = CliRunner().invoke(app, ["validate", "--config", str(path)])
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize(("name", "data"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_what_validate_accepts_the_schema_accepts(name: str, data: dict[str, Any], tmp_path: Path) -> None:
    assert errors(data) == []
    path = tmp_path / "rotator.toml"
    path.write_text(toml_of(data))
    result = CliRunner().invoke(app, ["validate", "--config", str(path)], env={"X": "https://hooks.example/x"})
    assert result.exit_code == 0, result.output


def test_rtoml_and_tomllib_read_the_shipped_configs_alike() -> None:
    rtoml = pytest.importorskip("rtoml")
    for path in [*SHIPPED, ROOT / "pyproject.toml"]:
        text = path.read_text()
        assert rtoml.loads(text) == tomllib.loads(text), path.name
