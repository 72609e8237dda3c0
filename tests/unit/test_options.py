"""Component options (rotator.options): parsing, and the ConfigError the registry makes of a wrong option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from msgspec import Meta, field

from rotator import ConfigError, Options, OptionsError, invalid, options_dict, parse_options, replace_options
from rotator.components import ComponentSetup
from rotator.registry import _build


class Request(Options):
    url: str
    method: Literal["GET", "POST"] = "GET"
    json_body: Any = field(default=None, name="json")

    def __post_init__(self) -> None:
        if not self.url.startswith("/"):
            raise invalid("url", "must start with /")


class Token(Options, tag_field="method", tag="token"):
    token: str = "env:TOKEN"


class AppRole(Options, tag_field="method", tag="approle"):
    role_id: str = "r"


class Sample(Options):
    create: Request
    requests: list[Request] = []
    targets: list[str | Request] = []
    auth: Token | AppRole = field(default_factory=Token)
    mode: Literal["fast", "safe"] | None = None
    timeout: Annotated[float, Meta(gt=0, le=60)] = 5.0
    retries: Annotated[int, Meta(ge=0)] = 2
    verbose: bool = False


def error(options: dict[str, Any]) -> OptionsError:
    with pytest.raises(OptionsError) as caught:
        parse_options(Sample, options)
    return caught.value


def test_valid_options_parse_with_defaults_and_lax_scalars() -> None:
    parsed = parse_options(Sample, {"create": {"url": "/keys", "json": {"a": 1}}, "retries": "3", "verbose": "true"})
    assert parsed.create == Request(url="/keys", json_body={"a": 1})
    assert (parsed.retries, parsed.verbose, parsed.timeout, parsed.mode) == (3, True, 5.0, None)
    assert options_dict(parsed)["create"]["json"] == {"a": 1}  # config names, so it parses back
    assert parse_options(Sample, options_dict(parsed)) == parsed
    assert replace_options(parsed, retries=0).retries == 0 and parsed.retries == 3


@pytest.mark.parametrize(
    ("options", "option", "message", "fix"),
    [
        ({}, "create", "a value is required", "add create = ..."),
        ({"create": {}}, "create.url", "a value is required", "add create.url = ..."),
        ({"create": {"url": "/"}, "colour": 1}, "colour", "unknown option", "remove 'colour' or check its spelling"),
        ({"create": {"url": "/", "x": 1}}, "create.x", "unknown option", "remove 'create.x' or check its spelling"),
        (
            {"create": {"url": "/"}, "mode": "slow"},
            "mode",
            "'slow' is not one of: fast, safe",
            "use one of: fast, safe",
        ),
        ({"create": {"url": "/", "method": "PUT"}}, "create.method", "'PUT' is not one of: GET, POST", "use one of"),
        (
            {"create": {"url": "/"}, "requests": [{"url": "/"}, {"url": "x"}]},
            "requests[1].url",
            "must start with /",
            "documentation",
        ),
        (
            {"create": {"url": "/"}, "targets": ["/a", {"url": "/", "method": "PUT"}]},
            "targets[1].method",
            "'PUT' is not one of: GET, POST",
            "use one of: GET, POST",
        ),
        (
            {"create": {"url": "/"}, "auth": {"method": "ldap"}},
            "auth.method",
            "'ldap' is not one of: token, approle",
            "use one of: token, approle",
        ),  # tagged union
        ({"create": {"url": "/"}, "timeout": 0}, "timeout", "Expected float > 0.0", "documentation"),
        ({"create": {"url": "/"}, "retries": "many"}, "retries", "Expected int, got str", "documentation"),
        ({"create": "/keys"}, "create", "Expected object, got str", "documentation"),
    ],
)
def test_a_wrong_option_names_its_key_and_the_fix(options: dict[str, Any], option: str, message: str, fix: str) -> None:
    exc = error(options)
    assert (exc.option, exc.message) == (option, message)
    assert fix in (exc.fix or "")


def _sample_factory(options: dict[str, Any], setup: ComponentSetup) -> Sample:
    return parse_options(Sample, options)


def test_the_registry_names_the_config_file_and_the_full_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = ComponentSetup(name="p1", config_dir=tmp_path, state_dir=tmp_path, config_file=str(tmp_path / "r.toml"))
    monkeypatch.setattr("rotator.registry._factory", lambda *args: _sample_factory)
    with pytest.raises(ConfigError) as caught:
        _build("plugin", "sample", {"create": {"url": "/"}, "timeout": 99}, setup, "plans[0].plugin")
    assert not isinstance(caught.value, OptionsError)
    assert (caught.value.file, caught.value.key) == (str(tmp_path / "r.toml"), "plans[0].plugin.timeout")
    assert str(caught.value).startswith(f"{tmp_path / 'r.toml'}: plans[0].plugin.timeout: Expected float <= 60.0")
    assert caught.value.exit_code == 2


def test_a_third_party_pydantic_error_is_still_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import BaseModel, ConfigDict

    class ThirdParty(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: int = 1

    setup = ComponentSetup(name="p1", config_dir=tmp_path, state_dir=tmp_path, config_file="r.toml")
    monkeypatch.setattr("rotator.registry._factory", lambda *args: lambda options, setup: ThirdParty(**options))
    with pytest.raises(ConfigError) as caught:
        _build("plugin", "third", {"colour": 1}, setup, "plans[0].plugin")
    assert caught.value.key == "plans[0].plugin.colour" and "remove 'colour'" in (caught.value.fix or "")


def test_patterns_refuse_a_trailing_newline() -> None:
    """Option patterns end in \\Z (Python's $ would let "us-east-1\\n" through into a signed AWS endpoint)."""
    from rotator_plugins.aws.session import AwsConnectionOptions

    assert parse_options(AwsConnectionOptions, {"region": "us-east-1"}).region == "us-east-1"
    for wrong in ("us-east-1\n", "us-east-1 ", "US-EAST-1"):
        with pytest.raises(OptionsError) as caught:
            parse_options(AwsConnectionOptions, {"region": wrong})
        assert caught.value.option == "region" and "Expected str matching regex" in caught.value.message
