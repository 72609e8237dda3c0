r"""Component options: how a plugin, store or notifier declares its table and turns the config's mapping into it.

An options class extends `Options` (a msgspec Struct: typed, keyword-only, unknown keys refused) and declares
constraints with `Annotated[int, Meta(ge=1)]`; checks across fields go in `__post_init__` (which may also set a
normalized value), raising `invalid(option, message)` so the error names the option. msgspec applies `kw_only`
to a class's own fields only: a subclass that declares a required option after an optional one says
`class MyOptions(Options, kw_only=True)`. A `Meta(pattern=...)` is searched with Python's `re`: anchor it with
`^...\Z`, as `$` also matches before a trailing newline.
`parse_options(OptionsClass, mapping)` validates and raises `OptionsError`, which the registry turns into a
ConfigError naming the file and the full key (`plans[0].plugin.connect_timeout`), with the fix.

Why msgspec and not pydantic (which reads the config file itself, in rotator/config.py): these classes are
imported on the Lambda rotation function's cold path, where pydantic costs ~60 ms of import and validator builds
and msgspec ~3 ms (bench/lambda_import.py). Coercion is lax, as pydantic's: "5" for an int and "true" for a bool
are accepted (Lambda settings and tags are strings).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from msgspec import Meta, field

from rotator.errors import ConfigError

__all__ = ["Meta", "Options", "OptionsError", "field", "invalid", "options_dict", "parse_options", "replace_options"]

OptionsT = TypeVar("OptionsT", bound="Options")

# msgspec's messages: "<what> - at `$.a.b[0]`", and for a key: "Object contains unknown field `x`".
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_INVALID = re.compile(r"^option `(?P<name>[^`]+)`: (?P<message>.*)$", re.DOTALL)


class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every component's options."""


class OptionsError(ConfigError):
    """An option is wrong. `option` is its key inside the component's table ("" for the table itself); the
    registry prefixes the component's own key and names the config file."""

    def __init__(self, message: str, *, option: str, fix: str):
        self.option = option
        self.message = message
        super().__init__(message, key=option or None, fix=fix)


def invalid(option: str, message: str) -> ValueError:
    """The error a `__post_init__` raises for one of its options: `raise invalid("url", "must start with https://")`."""
    return ValueError(f"option `{option}`: {message}")


def _join(path: str, name: str) -> str:
    path = path.lstrip(".")
    return f"{path}.{name}" if path and name else (path or name)


def _allowed_values(cls: type[Options], path: str) -> list[Any]:
    """The values a Literal or Enum option at `path` (".a.b", ".items[0]") takes, from the options class; [] when
    the path does not lead to one. Through unions (`str | Target`), every member that has the path counts; a tagged
    union's tag field takes its members' tags. Only runs on an error, so msgspec.inspect is imported here."""
    import msgspec.inspect as mi

    types: list[Any] = [mi.type_info(cls)]
    for name, index in re.findall(r"\.([^.\[]+)|(\[[^\]]*\])", path):
        found: list[Any] = []
        for info in _members(types, mi):
            if name and getattr(info, "tag_field", None) == name:  # a tagged union's tag: its members' tags
                found.append(mi.LiteralType(values=(info.tag,)))
            elif name:
                found += [f.type for f in getattr(info, "fields", ()) if f.encode_name == name]
            elif index:
                found += [t for t in (getattr(info, "item_type", None), getattr(info, "value_type", None)) if t]
        types = found
    allowed: list[Any] = []
    for info in _members(types, mi):
        if isinstance(info, mi.LiteralType):
            allowed += [value for value in info.values if value not in allowed]
        elif isinstance(info, mi.EnumType):
            allowed += [member.value for member in info.cls if member.value not in allowed]
    return allowed


def _members(types: list[Any], mi: Any) -> list[Any]:
    """The types, with each union replaced by its members."""
    return [member for info in types for member in (info.types if isinstance(info, mi.UnionType) else (info,))]


def _error(text: str, cls: type[Options]) -> OptionsError:
    matched = _AT.match(text)
    message, path = (matched["message"], matched["path"] or "") if matched else (text, "")
    if unknown := _UNKNOWN.match(message):
        option = _join(path, unknown["name"])
        return OptionsError("unknown option", option=option, fix=f"remove {option!r} or check its spelling")
    if missing := _MISSING.match(message):
        option = _join(path, missing["name"])
        return OptionsError("a value is required", option=option, fix=f"add {option} = ...")
    if own := _INVALID.match(message):
        return OptionsError(own["message"], option=_join(path, own["name"]), fix=_FIX)
    # "Invalid enum value 'x'" for a Literal or Enum, "Invalid value 'x'" for a tagged union's tag
    kind = next((p for p in ("Invalid enum value ", "Invalid value ") if message.startswith(p)), None)
    if kind and (allowed := _allowed_values(cls, path)):
        choices = ", ".join(map(str, allowed))
        value = message.removeprefix(kind)
        return OptionsError(f"{value} is not one of: {choices}", option=path.lstrip("."), fix=f"use one of: {choices}")
    # "Expected `int` >= 1": the constraint, without msgspec's markup.
    return OptionsError(message.replace("`", ""), option=path.lstrip("."), fix=_FIX)


_FIX = "see the component's documentation for the allowed values"


def parse_options(cls: type[OptionsT], options: Mapping[str, Any] | None) -> OptionsT:
    """The component's options from its config table (minus `type`), validated; OptionsError when wrong."""
    try:
        return msgspec.convert(dict(options or {}), cls, strict=False)
    except msgspec.ValidationError as exc:
        raise _error(str(exc), cls) from None


def options_dict(options: Options) -> dict[str, Any]:
    """The options as plain data (what `parse_options` takes back), keyed by their config names."""
    result: dict[str, Any] = msgspec.to_builtins(options)
    return result


def replace_options(options: OptionsT, **changes: Any) -> OptionsT:
    """A copy with some fields changed."""
    return msgspec.structs.replace(options, **changes)
