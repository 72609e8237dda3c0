"""The small template language of the API-key plugins: ``{root}`` and ``{root.field}`` placeholders, nothing else.

Templates are parsed with ``string.Formatter().parse`` when the config is loaded, and rendered by plain dictionary
lookups: no attribute access, no indexing, no conversions (``!r``), no format specs, no expressions. So a config file
cannot reach Python objects through a template (``{current.__class__}`` is refused at load), and a value never becomes
code. ``{{`` and ``}}`` are literal braces.

Roots (what a placeholder may start with) are chosen per template by the plugin; the http-api-key plugin offers
``admin``, ``current``, ``pending``, ``previous``, ``key`` (the key a request acts on), ``plan``, ``run``, ``name``
(the name given to a new key) and ``page`` (list pagination).

In a URL, every substituted value is percent-encoded (an id cannot add a path segment or a query). In a JSON body, a
string that is exactly one placeholder is replaced by the value itself, keeping its JSON type (a list of scopes).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

# Roots that are mappings (a placeholder names one of their fields); every other root is a single value.
MAPPING_ROOTS = frozenset({"admin", "current", "pending", "previous", "key", "extra"})
_FIELD = re.compile(r"^(?P<root>[a-z]+)(?:\.(?P<field>[A-Za-z][A-Za-z0-9_]*))?\Z")


class TemplateError(ValueError):
    """A template refers to something it may not, or to a value the run does not have."""


@dataclass(frozen=True)
class Placeholder:
    root: str
    field: str | None

    def __str__(self) -> str:
        return f"{{{self.root}.{self.field}}}" if self.field else f"{{{self.root}}}"


@dataclass(frozen=True)
class Template:
    """One compiled template: literal text and placeholders, in order."""

    text: str
    parts: tuple[str | Placeholder, ...]

    @classmethod
    def compile(cls, text: str, roots: Iterable[str]) -> Template:
        """Parse `text`; TemplateError (an options class's __post_init__ reports it on the option) if not allowed."""
        allowed = frozenset(roots)
        parts: list[str | Placeholder] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(f"bad template {text!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
        for literal, field_name, spec, conversion in parsed:
            if literal:
                parts.append(literal)
            if field_name is None:
                continue
            match = _FIELD.match(field_name)
            if match is None or conversion or spec:
                raise TemplateError(
                    f"bad placeholder {{{field_name}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}} in {text!r}: only {{root}} or {{root.field}} is allowed"
                )
            root, field = match["root"], match["field"]
            if root in allowed and (field is None) == (root in MAPPING_ROOTS):
                raise TemplateError(
                    f"bad placeholder {{{field_name}}} in {text!r}: "
                    + (f"name a field of {root}, e.g. {{{root}.name}}" if field is None else f"{root} has no fields")
                )
            if root not in allowed:
                raise TemplateError(
                    f"unknown placeholder {{{field_name}}} in {text!r}: use one of "
                    + ", ".join(f"{{{r}...}}" for r in sorted(allowed))
                )
            parts.append(Placeholder(root, field))
        return cls(text, tuple(parts))

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(p for p in self.parts if isinstance(p, Placeholder))

    def render(self, values: Mapping[str, Any], *, url: bool = False) -> str:
        """The text with every placeholder replaced; in a URL each value is percent-encoded."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = lookup(values, part)
            if isinstance(value, Mapping | list | tuple):
                raise TemplateError(f"{part} is not a single value; it cannot be written inside text")
            text = "" if value is None else str(value)
            out.append(quote(text, safe="") if url else text)
        return "".join(out)

    def whole(self) -> Placeholder | None:
        """The placeholder, when the template is exactly one placeholder and nothing else."""
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], Placeholder) else None


def lookup(values: Mapping[str, Any], placeholder: Placeholder) -> Any:
    """The value of `placeholder` in `values` (a mapping of roots to values or to mappings of fields)."""
    if placeholder.root not in values:
        raise TemplateError(f"{placeholder} has no value at this step")
    value = values[placeholder.root]
    if placeholder.field is None:
        return value
    if not isinstance(value, Mapping) or placeholder.field not in value:
        raise TemplateError(f"{placeholder}: {placeholder.root} has no field {placeholder.field!r}")
    return value[placeholder.field]


def compile_tree(tree: Any, roots: Iterable[str]) -> Any:
    """Compile every string of a JSON-like tree (a request body or a header table); other values stay."""
    if isinstance(tree, str):
        return Template.compile(tree, roots)
    if isinstance(tree, Mapping):
        return {str(k): compile_tree(v, roots) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [compile_tree(v, roots) for v in tree]
    return tree


def render_tree(tree: Any, values: Mapping[str, Any]) -> Any:
    """Render a compiled tree: strings are rendered; a string that is one placeholder keeps the value's type."""
    if isinstance(tree, Template):
        whole = tree.whole()
        return lookup(values, whole) if whole is not None else tree.render(values)
    if isinstance(tree, Mapping):
        return {k: render_tree(v, values) for k, v in tree.items()}
    if isinstance(tree, list):
        return [render_tree(v, values) for v in tree]
    return tree


def placeholders_in(tree: Any) -> list[Placeholder]:
    if isinstance(tree, Template):
        return list(tree.placeholders)
    if isinstance(tree, Mapping):
        return [p for v in tree.values() for p in placeholders_in(v)]
    if isinstance(tree, list):
        return [p for v in tree for p in placeholders_in(v)]
    return []
