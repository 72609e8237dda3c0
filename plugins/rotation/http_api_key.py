"""API keys of any HTTP API (type ``http-api-key``), declared in the config: four requests and where the key sits.

The secret: ``{"key_id", "api_key", "name"}`` (names set by ``id_field`` and ``key_field``; ``key_field`` must look
secret to the scrubber: it must contain key, token, secret, pass, value, credential, private or auth). Other fields of
CURRENT (an account id, a region) are carried into each new version. Strategy ``single-user``: the old and the new
key are both valid until revoke (no window). Rotation, reconcile and admin credentials: see http_keys.py.

```toml
[[plans]]
id = "acme"
secret = "app/acme-key"
grace = "1h"
[plans.plugin]
type = "http-api-key"
base_url = "https://api.acme.example"
admin = { token = "env:ACME_ADMIN_TOKEN" }      # or admin_secret = "ops/acme-admin" (a secret in the store)
create = { method = "POST", url = "/v1/keys", headers = { Authorization = "Bearer {admin.token}" },
           json = { name = "{name}" }, expect = [201], key_path = "data.key", id_path = "data.id" }
test = { method = "GET", url = "/v1/whoami", headers = { Authorization = "Bearer {key.api_key}" } }
revoke = { method = "DELETE", url = "/v1/keys/{key.key_id}", headers = { Authorization = "Bearer {admin.token}" },
           expect = [204] }
list = { url = "/v1/keys?page={page}", headers = { Authorization = "Bearer {admin.token}" }, items_path = "data",
         id_path = "id", name_path = "name", page_start = 1 }
```

Each request: ``method``, ``url`` (a path joined to ``base_url``, or an absolute URL), ``headers``, a body (``json``,
a table whose strings are templates, or ``form``), ``basic_auth = ["{user}", "{password}"]``, ``expect`` (the
statuses that mean success). Templates (see http_template.py) may use:

- create: ``{admin.*}``, ``{current.*}``, ``{plan}``, ``{run}``, ``{name}`` (give this name to the new key:
  reconcile finds the plan's keys by its prefix);
- test: ``{admin.*}``, ``{current.*}``, ``{key.*}`` (the key under test), ``{plan}``;
- revoke: ``{admin.*}``, ``{current.*}``, ``{key.*}`` (the key to delete: PREVIOUS at revoke, PENDING at discard,
  an orphan at reconcile, which has only its id field and ``name``), ``{plan}``;
- list: ``{admin.*}``, ``{current.*}``, ``{plan}``, ``{prefix}`` (the plan's name prefix), ``{page}``.

create: ``key_path`` and ``id_path`` (dotted paths such as ``data.attributes.key``) locate the new key and its id in
the response (``id_path`` omitted: the key keeps CURRENT's id). test: ``check_path`` and ``check_equals`` add a
condition on the response body (e.g. ``valid`` is true). list (optional; without it there is no reconcile):
``items_path``, ``id_path``, ``name_path``, and either ``next_path`` (where the next page's URL is) or ``page_start``
(the first ``{page}`` number; pages are fetched until an empty one, or one shorter than ``page_size``, at most
``max_pages``).

Remote calls are exactly the four requests the config declares: create (mint), test (probe), revoke (delete, also
used by discard and reconcile), list (reconcile). Transport (TLS, ``ca_bundle``, timeouts, retries of 429/5xx with
Retry-After up to ``retry_after_cap``) and error mapping: rotator_plugins.http_transport. A bad option is a
ConfigError naming ``plans[..].plugin.<option>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta
from rotator_plugins.http_transport import HttpTransport, ResetKind, dig, json_of
from rotator_plugins.rotation.http_keys import (
    SECRET_FIELD,
    AdminCredentials,
    ApiKeyRotation,
    KeyApi,
    KeyOptions,
    ListedKey,
    MintedKey,
)
from rotator_plugins.rotation.http_template import (
    Placeholder,
    Template,
    TemplateError,
    compile_tree,
    placeholders_in,
    render_tree,
)

from rotator import (
    AuthenticationFailed,
    ComponentSetup,
    Credential,
    Options,
    RotationContext,
    Stage,
    StepError,
    get_logger,
    invalid,
    parse_options,
    register_secret,
)

log = get_logger("rotator.plugins.http_api_key")
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class RequestSpec(Options, kw_only=True):
    """One HTTP request of the plugin, as templates."""

    ROOTS: ClassVar[frozenset[str]] = frozenset({"admin", "current", "plan"})

    method: Method = "GET"
    url: Annotated[str, Meta(min_length=1)]
    headers: dict[str, str] = {}
    json_body: Any = msgspec.field(default=None, name="json")
    form: dict[str, str] | None = None
    basic_auth: tuple[str, str] | None = None
    expect: tuple[int, ...] = (200,)

    def __post_init__(self) -> None:
        # Every template is compiled now, so a bad one is refused at load (attribute access, unknown roots, ...).
        templated = (
            ("url", self.url),
            ("headers", self.headers),
            ("json", self.json_body),
            ("form", self.form),
            ("basic_auth", self.basic_auth),
        )
        for name, value in templated:
            try:
                compile_tree(value, self.ROOTS)
            except TemplateError as exc:
                raise invalid(name, str(exc)) from None
        if not self.expect or any(not 100 <= s <= 599 for s in self.expect):
            raise invalid("expect", "expect must list HTTP statuses (100-599), e.g. [200] or [201]")
        if self.json_body is not None and self.form is not None:
            raise invalid("json", "give either json or form as the body, not both")

    def placeholders(self) -> list[Any]:
        return placeholders_in(
            compile_tree([self.url, self.headers, self.json_body, self.form, list(self.basic_auth or ())], self.ROOTS)
        )

    @property
    def label(self) -> str:
        """How messages name this call: its method and URL template (never the rendered URL)."""
        return f"{self.method} {self.url.split('?')[0]}"


class CreateSpec(RequestSpec, kw_only=True):
    ROOTS: ClassVar[frozenset[str]] = frozenset({"admin", "current", "plan", "run", "name", "extra"})
    method: Method = "POST"
    key_path: Annotated[
        str, Meta(min_length=1, description="where the new key sits in the response, e.g. data.attributes.key")
    ]
    id_path: Annotated[str, Meta(description="where its id sits; omitted: the key keeps CURRENT's id")] | None = None


class TestSpec(RequestSpec):
    __test__ = False  # not a pytest test class
    ROOTS: ClassVar[frozenset[str]] = frozenset({"admin", "current", "key", "plan"})
    check_path: str | None = None
    check_equals: str | int | bool | None = None


class DeleteSpec(RequestSpec):
    ROOTS: ClassVar[frozenset[str]] = frozenset({"admin", "current", "key", "plan"})
    method: Method = "DELETE"
    expect: tuple[int, ...] = (200, 202, 204)


class ListSpec(RequestSpec, kw_only=True):
    ROOTS: ClassVar[frozenset[str]] = frozenset({"admin", "current", "plan", "prefix", "page"})
    items_path: Annotated[str, Meta(min_length=1)]
    id_path: str = "id"
    name_path: str = "name"
    next_path: str | None = None
    page_start: Annotated[int, Meta(ge=0)] | None = None
    page_size: (
        Annotated[int, Meta(ge=1, description="the page size the URL asks for: a shorter page is the last")] | None
    ) = None
    max_pages: Annotated[int, Meta(ge=1, le=1000)] = 50


class HttpApiKeyOptions(KeyOptions, kw_only=True):
    """The http-api-key plugin's options (the plan's plugin table minus `type`)."""

    base_url: Annotated[str, Meta(pattern=r"^https?://[^/?#]+")]
    create: CreateSpec
    test: TestSpec
    revoke: DeleteSpec
    list_keys: ListSpec | None = msgspec.field(default=None, name="list")
    id_field: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\Z")] = "key_id"
    key_field: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\Z")] = "api_key"
    # A secret ({key.api_key}, {admin.token}, ...) in a URL is refused: servers, proxies and clients log URLs, and
    # vendors echo them (percent-encoded) in errors. true: the API takes the key only there (the scrubber still
    # redacts it in every encoding).
    secret_in_url: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.base_url.startswith("https://") and not self.allow_plain_http:
            raise invalid(
                "base_url", "base_url must use https:// (allow_plain_http = true only for a test server on loopback)"
            )
        if not SECRET_FIELD.search(self.key_field) or self.key_field in ("key_id", "id", "name"):
            raise invalid(
                "key_field",
                f"key_field {self.key_field!r} would not be scrubbed from logs: its name must contain key, token, "
                "secret, pass, value, credential, private or auth (e.g. api_key)",
            )
        if self.admin_secret is None:
            for name, spec in self.requests().items():
                for placeholder in spec.placeholders():
                    if placeholder.root == "admin" and placeholder.field not in self.admin:
                        raise invalid(
                            "admin",
                            f"{name} uses {placeholder}, but admin has no {placeholder.field!r}: add admin = "
                            f'{{{placeholder.field} = "env:VAR"}} or admin_secret = "<secret in the store>"',
                        )
        if not self.secret_in_url:
            for name, spec in self.requests().items():
                secret = next((str(p) for p in url_placeholders(spec) if self.is_secret(p)), None)
                if secret is not None:
                    raise invalid(
                        f"{name}.url",
                        f"{name}.url puts {secret}, a secret, into the URL (logged by servers and proxies, echoed in "
                        f'errors): send it in a header, e.g. headers = {{ Authorization = "Bearer {secret}" }}, or '
                        "set secret_in_url = true if the API takes it only in the URL",
                    )
        pages = self.list_keys is not None and any(p.root == "page" for p in self.list_keys.placeholders())
        if pages and self.list_keys is not None and self.list_keys.page_start is None:
            raise invalid("list.page_start", "list uses {page}: set page_start (the first page number)")

    def is_secret(self, placeholder: Placeholder) -> bool:
        """Whether a placeholder stands for a secret: any admin field, and a key's or a stored version's secret
        fields (key_field, and names the scrubber treats as secret, but for id_field, name and other ids)."""
        if placeholder.root == "admin":
            return True
        if placeholder.root not in ("key", "current", "pending", "previous") or placeholder.field is None:
            return False
        field = placeholder.field
        if field == self.key_field:
            return True
        public = field in (self.id_field, "name") or field.endswith(("_id", "_name", "_arn"))
        return not public and bool(SECRET_FIELD.search(field))

    def requests(self) -> dict[str, RequestSpec]:
        found: dict[str, RequestSpec] = {"create": self.create, "test": self.test, "revoke": self.revoke}
        if self.list_keys is not None:
            found["list"] = self.list_keys
        return found


class TemplatedKeyApi:
    """A KeyApi whose calls are the requests of an HttpApiKeyOptions (the vendor plugins build one in code)."""

    def __init__(
        self,
        vendor: str,
        options: HttpApiKeyOptions,
        setup: ComponentSetup | None,
        *,
        fix_auth: str,
        sleep: Callable[[float], None] = time.sleep,
        reset_header: tuple[str, ResetKind] | None = None,
        name_limit: int | None = None,
    ) -> None:
        self.vendor = vendor
        self.options = options
        self.fix_auth = fix_auth
        self.name_limit = name_limit
        self.transport = HttpTransport(vendor, options.base_url, options, setup, reset_header=reset_header, sleep=sleep)
        required = sorted(
            {str(p.field) for spec in options.requests().values() for p in spec.placeholders() if p.root == "admin"}
        )
        self.admin = AdminCredentials(options, setup, vendor, required)
        self._compiled = {name: _compile(spec) for name, spec in options.requests().items()}

    # -- the KeyApi protocol ---------------------------------------------------------------------------------

    def mint(
        self, ctx: RotationContext, current: Credential, name: str, extra: Mapping[str, Any] | None = None
    ) -> MintedKey:
        """The configured create request; the new key and its id are read at ``key_path`` and ``id_path``."""
        if self.name_limit is not None and len(name) > self.name_limit:
            raise StepError(
                f"plan {ctx.plan_id}: create: the key name {name!r} is longer than {self.vendor}'s limit of "
                f"{self.name_limit} characters\n  fix: set a shorter name_prefix",
                plan_id=ctx.plan_id,
                step="create",
            )
        spec = self.options.create
        values = self._values(ctx, "create", current, run=ctx.run_id, name=name, extra=dict(extra or {}))
        response = self.send(ctx, "create", "create", values)
        assert response is not None
        body = json_of(ctx, "create", self.vendor, spec.label, response)
        secret = dig(body, spec.key_path)
        if not isinstance(secret, str) or not secret:
            raise StepError(
                f"plan {ctx.plan_id}: create: {self.vendor}: {spec.label} answered {response.status_code} without a "
                f"key at {spec.key_path!r}; a key may have been minted: the next run's reconcile deletes it\n  fix: "
                "check key_path against the API's documented response",
                plan_id=ctx.plan_id,
                step="create",
            )
        register_secret(secret)  # before anything could log or raise with it
        key_id = dig(body, spec.id_path) if spec.id_path else current.get(self.options.id_field)
        if key_id in (None, ""):
            raise StepError(
                f"plan {ctx.plan_id}: create: {self.vendor}: {spec.label} answered without an id at {spec.id_path!r}"
                "\n  fix: check id_path against the API's documented response",
                plan_id=ctx.plan_id,
                step="create",
            )
        return MintedKey(str(key_id), secret, name)

    def probe(self, ctx: RotationContext, credential: Credential) -> None:
        """The configured test request, authenticated with `credential`; its ``check_path`` must equal
        ``check_equals``."""
        spec = self.options.test
        values = self._values(ctx, "test", ctx.read_stage(Stage.CURRENT), key=dict(credential.value))
        response = self.send(
            ctx,
            "test",
            "test",
            values,
            fix_auth="the vendor refused the key under test (it may not have propagated yet)",
        )
        assert response is not None
        if spec.check_path is not None:
            body = json_of(ctx, "test", self.vendor, spec.label, response)
            found = dig(body, spec.check_path)
            if found != spec.check_equals:
                raise AuthenticationFailed(
                    f"plan {ctx.plan_id}: test: {self.vendor}: {spec.label} answered {spec.check_path} = "
                    f"{found!r}, not {spec.check_equals!r}",
                    plan_id=ctx.plan_id,
                    step="test",
                )

    def delete(self, ctx: RotationContext, step: str, key: Mapping[str, Any], current: Credential | None) -> None:
        """The configured revoke request for `key`; a 404 means already gone (done)."""
        self.send(ctx, step, "revoke", self._values(ctx, step, current, key=dict(key)), missing_ok=True)

    def list_keys(self, ctx: RotationContext, step: str) -> list[ListedKey] | None:
        """The configured list request, page after page; None when no list request is configured."""
        spec = self.options.list_keys
        if spec is None:
            return None
        values = self._values(ctx, step, ctx.read_stage(Stage.CURRENT), prefix=self.prefix(ctx))
        listed: list[ListedKey] = []
        page = spec.page_start
        next_url: str | None = None
        for number in range(spec.max_pages):
            if page is not None:
                values["page"] = page + number
            response = self.send(ctx, step, "list", values, url=next_url)
            assert response is not None
            body = json_of(ctx, step, self.vendor, spec.label, response)
            items = dig(body, spec.items_path)
            if not isinstance(items, list):
                raise StepError(
                    f"plan {ctx.plan_id}: {step}: {self.vendor}: {spec.label} answered without a list at "
                    f"{spec.items_path!r}\n  fix: check items_path against the API's documented response",
                    plan_id=ctx.plan_id,
                    step=step,
                )
            for item in items:
                key_id, name = dig(item, spec.id_path), dig(item, spec.name_path)
                if key_id not in (None, ""):
                    listed.append(ListedKey(str(key_id), str(name or "")))
            if spec.next_path is not None:
                next_url = dig(body, spec.next_path) or None
                if not next_url:
                    return listed
            elif page is None or not items or (spec.page_size is not None and len(items) < spec.page_size):
                return listed
        log.warning("stopped listing keys at max_pages", vendor=self.vendor, pages=spec.max_pages)
        return listed

    # -- requests --------------------------------------------------------------------------------------------

    def prefix(self, ctx: RotationContext) -> str:
        return Template.compile(self.options.name_prefix, {"plan"}).render({"plan": ctx.plan_id})

    def _values(self, ctx: RotationContext, step: str, current: Credential | None, **more: Any) -> dict[str, Any]:
        values: dict[str, Any] = {"plan": ctx.plan_id, **more}
        if current is not None:
            values["current"] = dict(current.value)
        return values

    def send(
        self,
        ctx: RotationContext,
        step: str,
        call: str | RequestSpec,
        values: Mapping[str, Any],
        *,
        url: str | None = None,
        missing_ok: bool = False,
        fix_auth: str | None = None,
    ) -> Any:
        """Render the `call` request (a configured one by name, or a vendor's own) with `values` and send it
        through the transport (`url`: a next-page link instead of the request's URL)."""
        if isinstance(call, RequestSpec):
            spec, compiled, call = call, _compile(call), call.label
        else:
            spec, compiled = self.options.requests()[call], self._compiled[call]
        if compiled["admin"] and "admin" not in values:
            values = {**values, "admin": self.admin.values(ctx, step)}
        try:
            target = url or compiled["url"].render(values, url=True)
            headers = render_tree(compiled["headers"], values)
            json_body = render_tree(compiled["json"], values)
            form = render_tree(compiled["form"], values)
            auth = render_tree(compiled["auth"], values)
        except TemplateError as exc:
            raise StepError(
                f"plan {ctx.plan_id}: {step}: {self.vendor}: {spec.label}: {exc}\n  fix: check the {call} request's "
                "templates against the secret's fields",
                plan_id=ctx.plan_id,
                step=step,
            ) from None
        return self.transport.request(
            ctx,
            step,
            spec.label,
            spec.method,
            target,
            headers={str(k): str(v) for k, v in (headers or {}).items()},
            json=json_body,
            data={str(k): str(v) for k, v in form.items()} if form is not None else None,
            auth=(str(auth[0]), str(auth[1])) if auth else None,
            expect=spec.expect,
            missing_ok=missing_ok,
            fix_auth=fix_auth or self.fix_auth,
        )


def url_placeholders(spec: RequestSpec) -> tuple[Placeholder, ...]:
    """The placeholders of a request's URL (path and query)."""
    return Template.compile(spec.url, spec.ROOTS).placeholders


def _compile(spec: RequestSpec) -> dict[str, Any]:
    return {
        "admin": any(p.root == "admin" for p in spec.placeholders()),
        "url": Template.compile(spec.url, spec.ROOTS),
        "headers": compile_tree(spec.headers, spec.ROOTS),
        "json": compile_tree(spec.json_body, spec.ROOTS),
        "form": compile_tree(spec.form, spec.ROOTS),
        "auth": compile_tree(list(spec.basic_auth) if spec.basic_auth else None, spec.ROOTS),
    }


class HttpApiKeyPlugin(ApiKeyRotation):
    """Rotates an API key through the requests the config declares (see the module docstring)."""

    def connect(
        self, options: Mapping[str, Any] | None, setup: ComponentSetup | None, sleep: Callable[[float], None]
    ) -> tuple[KeyOptions, KeyApi]:
        parsed = parse_options(HttpApiKeyOptions, options)
        self.id_field = parsed.id_field
        self.secret_field = parsed.key_field
        host = parsed.base_url.split("/")[2]
        api = TemplatedKeyApi(
            f"http-api-key ({host})",
            parsed,
            setup,
            fix_auth=(
                "check the admin credentials (admin_secret or admin) and that the API grants them the call; a "
                "refused call is never retried"
            ),
            sleep=sleep,
        )
        return parsed, api
