"""`rotator init`, `validate`, `store put` and `store get`: setting up and checking, before anything rotates.

`store get` is the one command that ever prints a secret value.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from rotator.cli.output import EXIT_USAGE, emit_json, fail, print_warning, reported_errors
from rotator.cli.params import ConfigOption, JsonOption, config_choice, read_json_object

if TYPE_CHECKING:
    from rotator.config import Config

commands = typer.Typer()
store_commands = typer.Typer(help="Seed or read a secret in a store.", no_args_is_help=True)
commands.add_typer(store_commands, name="store")


@commands.command()
def init(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Create state_dir, the local store and key, the journal.

    state_dir is made 0700, the key and the store's database 0600. Never a new key for a store that holds
    versions (they could not be decrypted): everything is checked before anything is created, and a missing key
    next to stored versions, a key that does not decrypt them, or a corrupt database stops init with the recovery
    (exit 2)."""
    with reported_errors(json_output):
        from rotator.config import load_config
        from rotator.workspace import Workspace

        cfg = load_config(config_choice(config))
        planned = _local_stores(cfg)
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cfg.state_dir.chmod(0o700)
        from rotator.local_store import LocalStore, create_key_file

        created: list[str] = []
        stores_created: list[str] = []
        notes: list[str] = []
        for name, key_path, db_path in planned:
            key_was_there = key_path is None or key_path.exists()
            if key_path is not None and create_key_file(key_path):
                created.append(str(key_path))
            if not db_path.exists():
                LocalStore(cfg.store_config(name).options, cfg.setup(name), create=True).close()
                stores_created.append(str(db_path))
                if key_was_there:
                    notes.append(
                        f"{db_path} was missing beside an existing key: an empty store was created; if it held "
                        "secrets, restore it from your backup over this empty one"
                    )
        fingerprint_key = None
        if cfg.model.rotator.fingerprint_key is None:  # else the operator keeps the key (env: or file:)
            from rotator.fingerprints import KEY_FILE_NAME as FINGERPRINT_KEY_FILE
            from rotator.fingerprints import create_key_file as create_fingerprint_key

            if create_fingerprint_key(cfg.state_dir / FINGERPRINT_KEY_FILE):
                fingerprint_key = str(cfg.state_dir / FINGERPRINT_KEY_FILE)
        workspace = Workspace(cfg)
        workspace.journal  # noqa: B018 - opening it creates the file and its tables
        journal_where = cfg.model.rotator.journal or str(cfg.state_dir / "journal.db")
        workspace.close()
        if json_output:
            emit_json(
                {
                    "state_dir": str(cfg.state_dir),
                    "keys_created": created,
                    "fingerprint_key_created": fingerprint_key,
                    "stores_created": stores_created,
                    "notes": notes,
                    "journal": journal_where,
                }
            )
            return
        lines = [f"state directory: {cfg.state_dir}"]
        lines += [
            f"created local store key: {path} (mode 0600; back it up apart from the store: without it the store "
            "is unreadable)"
            for path in created
        ]
        lines += [f"created local store: {path}" for path in stores_created]
        if fingerprint_key:
            lines.append(f"created fingerprint key: {fingerprint_key} (mode 0600, for `rotator leak`)")
        lines.append(f"journal: {journal_where}")
        for note in notes:
            print_warning(note)
        sys.stdout.write("\n".join(lines) + "\n")


def _local_stores(cfg: Config) -> list[tuple[str, Path | None, Path]]:
    """Every local store's (name, key file or None for key_env, database), after checking that init may create
    what is missing: never a new key beside stored versions, and an existing key must decrypt them."""
    from rotator.errors import ConfigError
    from rotator.local_store import DB_FILE_NAME, KEY_FILE_NAME, LocalStore, LocalStoreOptions, stored_versions
    from rotator.options import OptionsError, parse_options

    planned: list[tuple[str, Path | None, Path]] = []
    names = {plan.store for plan in cfg.plans} | set(cfg.model.stores)
    for name in sorted(names):
        component = cfg.store_config(name)
        if component.type != "local":
            continue
        try:
            options = parse_options(LocalStoreOptions, component.options)
        except OptionsError as exc:  # named as `validate` names it: the file, the option's full key, the fix
            key = f"stores.{name}.{exc.option}" if exc.option else f"stores.{name}"
            raise ConfigError(exc.message, file=str(cfg.path), key=key, fix=exc.fix) from None
        setup = cfg.setup(name)
        db_path = setup.path(options.path) if options.path else cfg.state_dir / DB_FILE_NAME
        key_path = None if options.key_env else setup.path(options.key_file or cfg.state_dir / KEY_FILE_NAME)
        planned.append((name, key_path, db_path))
        if options.key_env and not os.environ.get(options.key_env):
            raise ConfigError(
                f"environment variable {options.key_env} is not set",
                file=str(cfg.path),
                key=f"stores.{name}.key_env",
                fix=f"export {options.key_env}=$(openssl rand -base64 32) for a new store, or the existing "
                "store's key, then run init again",
            )
        if (key_path is None or key_path.exists()) and db_path.exists():
            LocalStore(component.options, setup).close()  # the key decrypts what is stored, or exit 2
        elif key_path is not None and not key_path.exists() and (versions := stored_versions(db_path)):
            raise ConfigError(
                f"the local store key {key_path} does not exist, but {db_path} holds {versions} encrypted "
                "versions: a new key could not decrypt them, so init makes none",
                file=str(cfg.path),
                key=f"stores.{name}",
                fix=f"restore {key_path} (mode 0600) from the backup of this store, or set key_env to a "
                "variable holding that key, then run init again",
            )
    return planned


@commands.command()
def validate(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Check the config; report every problem at once (exit 2).

    Each problem names the file, the key and the fix. Every plugin kind and notifier is built, as the commands that
    run plans build them."""
    with reported_errors(json_output):
        from rotator.config import load_config
        from rotator.workspace import Workspace

        cfg = load_config(config_choice(config))
        workspace = Workspace(cfg)
        warnings = [*cfg.warnings, *workspace.check_components()]
        if json_output:
            emit_json(
                {
                    "config": str(cfg.path),
                    "ok": True,
                    "plans": len(cfg.plans),
                    "stores": sorted(cfg.model.stores),
                    "notifiers": sorted(cfg.model.notifiers),
                    "warnings": warnings,
                }
            )
            return
        for warning in warnings:
            print_warning(warning)
        sys.stdout.write(
            f"{cfg.path}: ok ({_count(len(cfg.plans), 'plan')}, {_count(len(cfg.model.stores), 'store')}, "
            f"{_count(len(cfg.model.notifiers), 'notifier')})\n"
        )


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


StoreOption = Annotated[
    str, typer.Option("--store", "-s", metavar="NAME", help="The store's name in the config ([stores.NAME]).")
]
StageName = Literal["CURRENT", "PENDING", "PREVIOUS"]


@store_commands.command("put")
def store_put(
    secret: Annotated[str, typer.Argument(help="The secret's name in the store.", show_default=False)],
    file: Annotated[
        str,
        typer.Option("--file", "-f", metavar="FILE", help="A JSON object to store as CURRENT ('-' for stdin)."),
    ],
    store: StoreOption = "local",
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Seed or replace a secret: a JSON object becomes CURRENT."""
    with reported_errors(json_output):
        value = read_json_object(file)
        from rotator.config import load_config
        from rotator.workspace import Workspace

        workspace = Workspace(load_config(config_choice(config)))
        try:
            credential = workspace.store(store).put_current(secret, value)
            _record_put(workspace, store, secret, credential)
        finally:
            workspace.close()
        if json_output:
            emit_json({"secret": secret, "store": store, "version": credential.version_id, "stage": "CURRENT"})
        else:
            sys.stdout.write(f"stored {secret} in {store} as CURRENT (version {credential.version_id})\n")


def _record_put(workspace: Any, store: str, secret: str, credential: Any) -> None:
    """What a `store put` of a plan's secret means to the journal: the new value's fingerprints (so `rotator leak`
    finds it), and for a manual plan, a recorded rotation (its reminders stop). An automatic plan's schedule is
    left alone: seeding a secret is not rotating it (`rotator import --rotated-at` records a credential's age)."""
    from rotator.baselines import record_baseline
    from rotator.fingerprints import version_fingerprints
    from rotator.workspace import operator_name

    for plan in workspace.config.plans:
        if plan.store != store or plan.secret != secret:
            continue
        key = workspace.fingerprint_key
        if plan.is_manual:
            record_baseline(
                workspace.journal,
                workspace.bind(plan),
                credential,
                rotated_at=datetime.now(UTC),
                how="store put",
                operator=operator_name(),
                fingerprint_key=key,
            )
        elif key is not None:
            workspace.journal.save_fingerprints(
                version_fingerprints(key, plan.id, secret, credential.version_id, credential.value)
            )


@store_commands.command("get")
def store_get(
    secret: Annotated[str, typer.Argument(help="The secret's name in the store.", show_default=False)],
    stage: Annotated[
        StageName, typer.Option("--stage", case_sensitive=False, help="Which version of the secret.")
    ] = "CURRENT",
    store: StoreOption = "local",
    config: ConfigOption = None,
) -> None:
    """Print a secret's JSON value (the only command that shows one).

    A secret or stage that is not there is a usage error (exit 2)."""
    with reported_errors():
        from rotator.config import load_config
        from rotator.errors import SecretNotFound
        from rotator.model import Stage
        from rotator.workspace import Workspace

        wanted = Stage(stage.upper())
        workspace = Workspace(load_config(config_choice(config)))
        try:
            reader = workspace.store(store)
            try:  # a store may say "no such secret" by returning None or by raising SecretNotFound
                credential = reader.get(secret, wanted)
                current = reader.get(secret, Stage.CURRENT) if credential is None and wanted != Stage.CURRENT else None
            except SecretNotFound:
                credential = current = None
        finally:
            workspace.close()
        if credential is None:
            if wanted is Stage.CURRENT:
                fix = f"check the name, or seed it: rotator store put {secret} --file FILE --store {store}"
            elif current is None:
                fix = f"the secret has no versions at all: seed it with rotator store put {secret} --file FILE"
            elif wanted is Stage.PENDING:
                fix = "no rotation is in flight (PENDING exists only between create and promote); read CURRENT"
            else:
                fix = "PREVIOUS exists once a rotation has promoted a new version; read CURRENT"
            fail(f"{secret} has no {wanted.value} version in store {store}", EXIT_USAGE, fix=fix)
        sys.stdout.write(json.dumps(dict(credential.value), indent=2) + "\n")
