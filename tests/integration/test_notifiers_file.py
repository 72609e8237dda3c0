"""The file notifier with real files and processes: formats, mode 0600, owner and group, atomic replacement (the
old file stays intact when rendering or writing fails), the reload command, and through the engine."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rotator_plugins.notifiers.file import FileNotifier

from rotator import ComponentSetup, ConfigError, NotifyError, RotationEvent, StoreError, TransientError
from rotator.registry import load_notifier
from rotator.testing import sample_event
from tests.cli_env import CliEnv

VALUE: dict[str, Any] = {
    "engine": "postgres",
    "host": "db.internal",
    "port": 5432,
    "username": "app",
    "password": "p@ss w0rd 'quoted' \"double\" $HOME `id` \\ end",
    "dbname": "orders",
    "ssl": True,
    "options": {"sslmode": "verify-full"},
}


def setup_in(tmp_path: Path) -> ComponentSetup:
    return ComponentSetup(name="render", config_dir=tmp_path, state_dir=tmp_path / "state", config_file="rotator.toml")


def make(tmp_path: Path, **options: Any) -> FileNotifier:
    return FileNotifier({"path": "app.env", **options}, setup_in(tmp_path))


def holding(value: dict[str, Any] | None = None, kind: str = "credential.rotated") -> RotationEvent:
    return sample_event(kind, VALUE if value is None else value)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_json_is_written_with_mode_0600(tmp_path: Path):
    make(tmp_path)(holding())
    path = tmp_path / "app.env"
    assert json.loads(path.read_text()) == VALUE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_env_lines_read_back_by_a_shell(tmp_path: Path):
    make(tmp_path, format="env", env_prefix="DB_")(holding())
    text = (tmp_path / "app.env").read_text()
    assert "DB_HOST=db.internal\n" in text and "DB_PORT=5432\n" in text and "DB_SSL=true\n" in text
    shown = subprocess.run(
        [
            "sh",
            "-c",
            f'set -a; . "{tmp_path / "app.env"}"; exec "$0" -c "import json, os; print(json.dumps(dict(os.environ)))"',
            sys.executable,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    env = json.loads(shown.stdout)
    assert env["DB_PASSWORD"] == VALUE["password"]  # quoting survives ', ", $, `, \ and spaces
    assert json.loads(env["DB_OPTIONS"]) == VALUE["options"]
    assert env["DB_USERNAME"] == "app"


def test_template_placeholders(tmp_path: Path):
    (tmp_path / "pgpass.tpl").write_text("{host}:{port}:{dbname}:{username}:{password}\n# {{literal}}\n")
    make(tmp_path, path="pgpass", format="template", template="pgpass.tpl")(holding())
    assert (tmp_path / "pgpass").read_text() == f"db.internal:5432:orders:app:{VALUE['password']}\n# {{literal}}\n"


def test_owner_and_group(tmp_path: Path):
    if os.geteuid() == 0:  # as root, hand the file to another user, as a deployment would
        owner, group, uid, gid = "nobody", "nogroup", pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid
    else:  # otherwise the only owner a process may give away to is itself
        uid, gid = os.getuid(), os.getgid()
        owner, group = pwd.getpwuid(uid).pw_name, gid
    make(tmp_path, owner=owner, group=group, mode="0640")(holding())
    info = (tmp_path / "app.env").stat()
    assert (info.st_uid, info.st_gid) == (uid, gid)
    assert stat.S_IMODE(info.st_mode) == 0o640


def test_a_failed_render_leaves_the_old_file_intact(tmp_path: Path):
    path = tmp_path / "app.conf"
    path.write_text("old contents\n")
    path.chmod(0o600)
    (tmp_path / "app.tpl").write_text("password={password}\napi={api_token}\n")
    notifier = make(tmp_path, path="app.conf", format="template", template="app.tpl")
    with pytest.raises(NotifyError, match="the template names api_token, which the secret's value lacks") as info:
        notifier(holding())
    assert VALUE["password"] not in str(info.value)
    assert path.read_text() == "old contents\n" and leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_intact_and_no_temporary_file(tmp_path: Path):
    """The rename is the only step that touches the target: when it fails (here the target is a directory), the
    old contents stay and the temporary file is removed."""
    target = tmp_path / "app.env"
    target.mkdir()
    (target / "keep").write_text("old")
    with pytest.raises(NotifyError, match=r"cannot write .*app\.env: Is a directory"):
        make(tmp_path)(holding())
    assert (target / "keep").read_text() == "old" and leftovers(tmp_path) == []
    with pytest.raises(NotifyError, match=r"cannot create a file in .*missing-dir"):
        make(tmp_path, path="missing-dir/app.env")(holding())


def test_the_file_is_replaced_never_rewritten_in_place(tmp_path: Path):
    """A reader holding the old file keeps reading the old contents: a rename, not a truncate."""
    path = tmp_path / "app.env"
    make(tmp_path)(holding({"password": "first-password-value"}))
    with path.open() as reader:
        make(tmp_path)(holding({"password": "second-password-value"}))
        assert "first-password-value" in reader.read()
    assert "second-password-value" in path.read_text()


def test_reload_runs_after_the_write_and_gets_no_secret(tmp_path: Path):
    out = tmp_path / "reload.json"
    code = (
        "import json, os, sys\n"
        "json.dump({'env': {k: v for k, v in os.environ.items() if k.startswith('ROTATOR_')},\n"
        "           'file': open(os.environ['ROTATOR_FILE']).read()}, open(sys.argv[1], 'w'))\n"
    )
    event = holding()
    make(tmp_path, reload=[sys.executable, "-c", code, str(out)])(event)
    seen = json.loads(out.read_text())
    assert json.loads(seen["file"]) == VALUE  # the reload sees the new file
    assert seen["env"]["ROTATOR_FILE"] == str(tmp_path / "app.env")
    assert seen["env"]["ROTATOR_VERSION"] == event.version_id
    assert VALUE["password"] not in json.dumps(seen["env"])


def test_a_failing_reload_shows_its_stderr_scrubbed(tmp_path: Path):
    code = "import os, sys; sys.stderr.write(open(os.environ['ROTATOR_FILE']).read()); sys.exit(2)"
    notifier = make(tmp_path, format="env", reload={"argv": [sys.executable, "-c", code], "timeout": 30})
    with pytest.raises(NotifyError, match=r"reload: .* exited with code 2") as info:
        notifier(holding({"username": "app", "password": "a-password-only-the-file-holds"}))
    assert "a-password-only-the-file-holds" not in str(info.value) and "[REDACTED]" in str(info.value)


def test_reading_the_value(tmp_path: Path):
    without = RotationEvent(**{**sample_event().__dict__, "read_value": None})
    with pytest.raises(NotifyError, match=r"gives no way to read the secret \(RotationEvent.read_value is None\)"):
        make(tmp_path)(without)

    def unreachable() -> dict[str, Any]:
        raise TransientError("store unreachable")

    def refused() -> dict[str, Any]:
        raise StoreError("access denied")

    with pytest.raises(TransientError, match="store unreachable"):
        make(tmp_path)(RotationEvent(**{**sample_event().__dict__, "read_value": unreachable}))
    with pytest.raises(NotifyError, match=r"reading CURRENT of .* failed: access denied"):
        make(tmp_path)(RotationEvent(**{**sample_event().__dict__, "read_value": refused}))
    assert not (tmp_path / "app.env").exists()


def test_options_are_validated_with_the_key_named(tmp_path: Path):
    setup = setup_in(tmp_path)
    (tmp_path / "attr.tpl").write_text("{password.__class__}")
    for options, key in [
        ({"path": "a", "mode": "0644"}, "notifiers.render.mode"),
        ({"path": "a", "mode": "0200"}, "notifiers.render.mode"),
        ({"path": "a", "mode": "rw"}, "notifiers.render.mode"),
        ({"path": "a", "format": "yaml"}, "notifiers.render.format"),
        ({"path": "a", "format": "template"}, "notifiers.render"),
        ({"path": "a", "format": "template", "template": "missing.tpl"}, "notifiers.render.template"),
        ({"path": "a", "format": "template", "template": "attr.tpl"}, "is not a plain {key}"),
        ({"path": "a", "owner": "no-such-user-here"}, "notifiers.render.owner"),
        ({"path": "a", "reload": "systemctl reload app"}, "notifiers.render.reload"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_notifier("file", options, setup, "notifiers.render")
        assert key in str(info.value), str(info.value)


def test_through_the_engine_the_file_holds_current_and_nothing_else_does(tmp_path: Path):
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator]
state_dir = "state"

[notifiers.render]
type = "file"
path = "rendered/signing.env"
format = "env"
env_prefix = "APP_"
reload = ["{sys.executable}", "-c", "import os; open('reloaded', 'w').write(os.environ['ROTATOR_VERSION'])"]

[[plans]]
id = "signing-key"
plugin = {{type = "generated"}}
secret = "app/signing-key"
notify = ["render"]
""")
    (tmp_path / "rendered").mkdir()
    cli = CliEnv(tmp_path, config)
    assert cli.run("init").code == 0
    cli.seed("app/signing-key", {"value": "s" * 43})
    done = cli.run("rotate-now", "signing-key", "--json")
    assert done.code == 0, done.stderr
    current = cli.run("store", "get", "app/signing-key").json()
    rendered = tmp_path / "rendered" / "signing.env"
    assert rendered.read_text() == f"APP_VALUE={current['value']}\n"
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    assert (tmp_path / "reloaded").read_text() == done.json()["results"][0]["run_id"]
    history = cli.run("history", "--json")
    for text in (done.stdout, done.stderr, history.stdout, history.stderr):
        assert current["value"] not in text


@pytest.mark.parametrize("kind", ["credential.rotation_failed", "credential.rotation_stuck"])
def test_a_failure_event_writes_nothing_reads_nothing_and_reloads_nothing(tmp_path: Path, kind: str):
    """A failed run left CURRENT as it was: the config refuses failure kinds for `file`, and one handed to it all the
    same neither reads the store, nor touches the file, nor runs the reload."""
    path, marker = tmp_path / "app.env", tmp_path / "reloaded"
    path.write_text("OLD=1\n")
    reads: list[str] = []

    def read_value() -> dict[str, Any]:
        reads.append("read")
        return dict(VALUE)

    event = RotationEvent(**{**sample_event(kind).__dict__, "read_value": read_value})
    notifier = make(tmp_path, format="env", reload=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    notifier(event)
    assert path.read_text() == "OLD=1\n" and reads == [] and not marker.exists() and leftovers(tmp_path) == []
    notifier(holding())  # the same notifier still acts on a rotation
    assert reads == [] and marker.exists() and "PASSWORD=" in path.read_text()
