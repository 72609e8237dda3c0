"""The `rotator` command (typer). Exit codes: 0 all succeeded; 1 a rotation failed (rolled back, or stuck); 2 bad
usage or config. Every command that a script would read has --json, which prints one JSON document on stdout,
errors included.

Commands live in the modules of COMMAND_MODULES, each a `commands = typer.Typer()` whose commands join the root
here: adding a module of commands is one line in that tuple. Its shared helpers: rotator.cli.output (JSON, errors,
exit codes, times), rotator.cli.tables (plain tables), rotator.cli.params (shared options).

Start-up is kept small (`rotator --help` under 150 ms, bench/cli_startup.py): command modules import only typer
and these helpers at the top, and what a command needs (config, pydantic, the engine, rich's progress bar) inside
the command; typer's rich help is off (rich alone costs more than the rest of `--help`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from rotator.cli.output import emit_json, print_error
from rotator.cli.params import ConfigOption, remember_root_config

COMMAND_MODULES = (
    "rotator.cli.setup_commands",  # init, validate, store put / get
    "rotator.cli.report_commands",  # status, history
    "rotator.cli.run_commands",  # rotate-now, resume, reconcile, daemon
    "rotator.cli.lifecycle_commands",  # import, mark-rotated, leak
)

try:  # typer vendors click from 0.2x on; before, it used click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer
    from click.exceptions import ClickException  # type: ignore[assignment, no-redef, unused-ignore]


class RotatorGroup(TyperGroup):
    """The root group: with --json on the command line, a usage error (unknown option, bad value) is also one
    JSON document on stdout, as every other error is; the exit code stays 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" not in argv or not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        try:
            result = super().main(argv, prog_name, complete_var, False, windows_expand_args, **extra)
        except ClickException as exc:
            exc.show()
            emit_json({"error": exc.format_message(), "key": _param_key(exc), "fix": _usage_fix(exc)})
            sys.exit(exc.exit_code)
        except typer.Abort:
            print_error("aborted")
            emit_json({"error": "aborted", "key": None, "fix": None})
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _param_key(exc: ClickException) -> str | None:
    param = getattr(exc, "param", None)
    if param is None:
        return None
    names = [name for name in getattr(param, "opts", []) if name.startswith("--")]
    return names[0] if names else getattr(param, "human_readable_name", None)


def _usage_fix(exc: ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "rotator"
    return f"see `{path} --help`"


def _show_version(value: bool) -> None:
    if value:
        from rotator import __version__

        sys.stdout.write(f"rotator {__version__}\n")
        raise typer.Exit(0)


def _root(
    config: ConfigOption = None,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Rotate database passwords, cloud keys and API keys: create, stage, test, promote, revoke.

    Exit codes: 0 all succeeded; 1 a rotation failed (rolled back, or stuck); 2 bad usage or config."""
    remember_root_config(config)


def _command_name(info: Any) -> str:
    """A registered command's name as typer derives it (rotate_now -> rotate-now)."""
    return str(info.name or info.callback.__name__.lower().replace("_", "-"))


def build_app(only: str | None = None) -> typer.Typer:
    """The root app with every command of COMMAND_MODULES, or with the one command (or group) named `only`:
    typer builds a click command for each registered command at every invocation (every parameter's signature,
    help and type read), so running one command builds only that one."""
    root = typer.Typer(
        name="rotator",
        cls=RotatorGroup,
        help="Rotate database passwords, cloud keys and API keys: create, stage, test, promote, revoke.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["--help", "-h"]},
    )
    root.callback()(_root)
    for name in COMMAND_MODULES:
        commands: typer.Typer = importlib.import_module(name).commands
        if only is not None:
            picked = typer.Typer()
            picked.registered_commands = [c for c in commands.registered_commands if _command_name(c) == only]
            picked.registered_groups = [g for g in commands.registered_groups if g.name == only]
            if not (picked.registered_commands or picked.registered_groups):
                continue
            commands = picked
        root.add_typer(commands)
    return root


app = build_app()


def _invoked(argv: Sequence[str]) -> str | None:
    """The command named on the command line (after the root's own options), if it is one of ours."""
    args = iter(argv)
    for arg in args:
        if arg in ("-c", "--config"):
            next(args, None)
        elif arg.startswith("-"):
            continue
        else:
            known = {
                _command_name(c)
                for m in COMMAND_MODULES
                for c in importlib.import_module(m).commands.registered_commands
            }
            known |= {g.name for m in COMMAND_MODULES for g in importlib.import_module(m).commands.registered_groups}
            return arg if arg in known else None
    return None


def main() -> None:
    command = _invoked(sys.argv[1:])
    (build_app(command) if command else app)()


__all__ = ["COMMAND_MODULES", "app", "main"]
