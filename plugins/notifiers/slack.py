"""Type `slack`: post the rotation to a Slack channel through an incoming webhook.

Remote call: one HTTPS `POST <webhook_url>` with a JSON body {"text", "blocks"} (Slack's incoming-webhook message
format: `text` is the notification fallback, `blocks` the layout). The message names the plan, secret, store,
version, trigger and reason; never a secret value. Slack answers 200 with the body `ok`.

It takes every event kind (`events = [...]` in the config chooses). A failure event reads "Rotation of plan X
failed and was rolled back: the old credential still works" (credential.rotation_failed) or "Rotation of plan X
is stuck: an operator must act" (credential.rotation_stuck), then the error (one line, scrubbed, cut in the middle
past ERROR_LIMIT characters so that Slack's 3000-character section limit is never reached) and the action, then
plan, secret, store, run, trigger, reason, the live and the failed version.

The webhook URL is itself a secret (whoever holds it may post to the channel), so the option is a reference,
`webhook_url = "env:SLACK_WEBHOOK_URL"` (or `file:PATH`), resolved at each call, registered for scrubbing and
never put in a log line or error message.

Slack's documented incoming-webhook errors (status code and a short error code as the text body), mapped once, in
`raise_for_slack`:

| Slack answers | rotator raises |
|---|---|
| 400 invalid_payload, no_text, invalid_blocks, user_not_found, ... | NotifyError (the message was refused) |
| 403 action_prohibited, invalid_token, posting_to_general_channel_denied | NotifyError (the workspace forbids it) |
| 404 no_service, channel_not_found | NotifyError (the webhook or its channel is gone: make a new webhook) |
| 410 channel_is_archived | NotifyError (unarchive the channel or use another webhook) |
| 429 with Retry-After | waited once when Retry-After <= max_retry_after, else TransientError |
| 5xx (rollup_error), connection failure, timeout | TransientError (the engine retries) |

Slack allows about one message per second per webhook; the one in-process wait honours Retry-After as Slack asks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import requests
from msgspec import Meta
from rotator_plugins.http_transport import (
    probe_endpoint,
    require_https,
    retry_after_seconds,
    send,
    tls_verify,
)
from rotator_plugins.notifiers.events import (
    EVERY_KIND,
    OVERDUE,
    REMINDER_KINDS,
    ROLLED_BACK,
    ROTATION_FAILED,
    ROTATION_STUCK,
    one_line,
)

from rotator import (
    ComponentSetup,
    ConfigError,
    NotifyError,
    Options,
    RotationEvent,
    TransientError,
    invalid,
    is_secret_ref,
    parse_options,
    register_secret,
    resolve_secret_ref,
)

# Slack's error bodies are short snake_case codes; anything else is not echoed (it could be a proxy's page).
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}\Z")
# Slack's limits for a section's text and for one field of a section.
_TEXT_LIMIT, _FIELD_LIMIT = 3000, 2000
# How much of a failure's error and action a message shows, escaped: enough for the step, the plan and the cause,
# short enough to read in a channel, and well inside a section's 3000 characters.
ERROR_LIMIT, ACTION_LIMIT = 1500, 1000
_FAILURE_HEADLINES = {
    ROTATION_FAILED: "Rotation of plan `{plan}` failed and was rolled back: the old credential still works.",
    ROTATION_STUCK: "Rotation of plan `{plan}` is stuck: an operator must act.",
}
_ADVICE = {
    400: "Slack refused the message as malformed; this is a bug in the slack notifier, please report it",
    403: "the workspace does not allow this webhook to post here; ask a Slack admin, or create a new webhook",
    404: "the webhook was removed or its channel deleted; create a new incoming webhook and update webhook_url",
    410: "the channel is archived; unarchive it, or create a webhook for another channel and update webhook_url",
}


class SlackOptions(Options):
    webhook_url: str  # "env:VAR" or "file:PATH": the URL is a secret
    title: Annotated[str, Meta(min_length=1, max_length=150)] = "Credential rotated"
    timeout: Annotated[float, Meta(gt=0, le=120)] = 10.0
    ca_bundle: str | None = None
    # A 429 whose Retry-After is at most this many seconds is waited out once, here; a longer one is retried by
    # the engine (TransientError).
    max_retry_after: Annotated[float, Meta(ge=0, le=60)] = 10.0

    def __post_init__(self) -> None:
        if not is_secret_ref(self.webhook_url):
            raise invalid(
                "webhook_url",
                'webhook_url must be a reference such as "env:SLACK_WEBHOOK_URL", not the URL: the URL is a secret',
            )


def _escape(text: object) -> str:
    """Slack's mrkdwn control characters (&, <, >) escaped, as Slack's formatting docs ask."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escaped_line(text: str, limit: int) -> str:
    """`text` on one line, scrubbed and escaped, at most `limit` characters once escaped. The cut is made in the
    middle of the raw text (keeping the start and the end, see one_line) and escaping comes after it, so that
    an escape such as &amp; is never cut in half and the end of the text survives however much escaping adds."""
    budget = limit
    while True:
        escaped = _escape(one_line(text, budget))
        if len(escaped) <= limit or budget <= 1:
            return escaped[:limit]
        budget = max(1, budget * limit // len(escaped) - 1)  # shrink by how much escaping lengthened it


def _failure_message(event: RotationEvent) -> dict[str, Any]:
    """A failure event's body: what happened, the error and the action first, then where."""
    plan = _escape(event.plan_id)
    headline = _FAILURE_HEADLINES[event.kind].format(plan=plan)
    error = _escaped_line(event.error, ERROR_LIMIT) if event.error else "not recorded"
    action = _escaped_line(event.action, ACTION_LIMIT) if event.action else "see `rotator history` for the run"
    fields = {
        "Event": event.kind,
        "Plan": event.plan_id,
        "Secret": event.secret_id,
        "Store": event.store,
        "Run": event.run_id,
        "Trigger": event.trigger,
        "Reason": one_line(event.reason, ACTION_LIMIT) if event.reason else "none",
        "Live version": event.previous_version_id or "none",
        "Failed version": event.version_id,
        "Tags": ", ".join(event.tags) or "none",
    }
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(headline, _TEXT_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*Error*\n{error}", _TEXT_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*Action*\n{action}", _TEXT_LIMIT)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*{name}*\n{_escape(value)}", _FIELD_LIMIT)}
                for name, value in fields.items()
            ],
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"run `{_escape(event.run_id)}` at {_escape(event.rotated_at.isoformat())}",
                }
            ],
        },
    ]
    return {"text": _clip(f"{headline} Error: {error}", _TEXT_LIMIT), "blocks": blocks}


def _reminder_message(event: RotationEvent) -> dict[str, Any]:
    """A manual plan's reminder: who must rotate what by when, and how to record it."""
    plan, owner = _escape(event.plan_id), _escape(event.owner or "its owner")
    due = _escape(event.due_at.isoformat()) if event.due_at else "now"
    if event.kind == OVERDUE:
        headline = f"Overdue: plan `{plan}` was due for rotation by hand at {due}. Owner: {owner}."
    else:
        headline = f"Rotation due: plan `{plan}` must be rotated by hand by {due}. Owner: {owner}."
    action = _escaped_line(event.action, ACTION_LIMIT) if event.action else "rotate it, then record it"
    fields = {
        "Event": event.kind,
        "Plan": event.plan_id,
        "Secret": event.secret_id,
        "Store": event.store,
        "Owner": event.owner or "none",
        "Due": event.due_at.isoformat() if event.due_at else "now",
        "Tags": ", ".join(event.tags) or "none",
    }
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(headline, _TEXT_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*Action*\n{action}", _TEXT_LIMIT)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*{name}*\n{_escape(value)}", _FIELD_LIMIT)}
                for name, value in fields.items()
            ],
        },
    ]
    return {"text": _clip(headline, _TEXT_LIMIT), "blocks": blocks}


def slack_message(event: RotationEvent, title: str) -> dict[str, Any]:
    """The JSON body: `text` (the fallback shown in notifications) and `blocks`. Ids only, never a value."""
    if event.kind in _FAILURE_HEADLINES:
        return _failure_message(event)
    if event.kind in REMINDER_KINDS:
        return _reminder_message(event)
    rolled_back = event.kind == ROLLED_BACK
    plan, secret, store = _escape(event.plan_id), _escape(event.secret_id), _escape(event.store)
    if rolled_back:
        headline = (
            f"Rotation rolled back: plan `{plan}` is back at version `{_escape(event.previous_version_id)}` of "
            f"`{secret}` in store `{store}`. Consumers that switched must read the store again."
        )
    else:
        headline = (
            f"{_escape(title)}: plan `{plan}`, secret `{secret}` in store `{store}` is now at version "
            f"`{_escape(event.version_id)}`."
        )
    fields = {
        "Event": event.kind,
        "Plan": event.plan_id,
        "Version": event.version_id,
        "Previous version": event.previous_version_id or "none",
        "Trigger": event.trigger,
        "Reason": one_line(event.reason, ACTION_LIMIT) if event.reason else "none",
        "Tags": ", ".join(event.tags) or "none",
    }
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(headline, _TEXT_LIMIT)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*{name}*\n{_escape(value)}", _FIELD_LIMIT)}
                for name, value in fields.items()
            ],
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"run `{_escape(event.run_id)}` at {_escape(event.rotated_at.isoformat())}",
                }
            ],
        },
    ]
    return {"text": _clip(headline, _TEXT_LIMIT), "blocks": blocks}


def raise_for_slack(response: requests.Response, *, what: str) -> None:
    """The one place where Slack's answers become rotator errors (see the module docstring)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    body = response.text.strip()
    code = body if _ERROR_CODE.match(body) else ""
    label = f"{status} {code}".strip()
    if status == 429:
        wait = retry_after_seconds(response)
        after = f" (Retry-After {wait:g}s)" if wait is not None else ""
        raise TransientError(f"{what}: Slack is rate limiting this webhook{after}; retried")
    if status >= 500:
        raise TransientError(f"{what}: Slack answered {label}; retried")
    advice = _ADVICE.get(status, "see Slack's incoming-webhook errors")
    raise NotifyError(f"{what}: Slack refused the message ({label}): {advice}")


class SlackNotifier:
    """Posts each event to a Slack channel through an incoming webhook (see the module docstring)."""

    event_kinds = EVERY_KIND

    def __init__(
        self,
        options: Mapping[str, Any],
        setup: ComponentSetup,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.options = parse_options(SlackOptions, options)
        self.setup = setup
        self._sleep = sleep
        self._session = requests.Session()
        self._what = f"slack notifier {setup.name}"

    def close(self) -> None:
        """For the daemon's reload and shutdown: the HTTP session's keep-alive connections are closed."""
        self._session.close()

    def _webhook_url(self) -> str:
        try:
            url = resolve_secret_ref(
                self.options.webhook_url, key=f"notifiers.{self.setup.name}.webhook_url", setup=self.setup
            )
        except ConfigError as exc:  # the variable or file went missing after start: this delivery fails
            raise NotifyError(f"{self._what}: {exc}") from None
        register_secret(url)
        require_https(url, what=self._what)
        return url

    def probe(self) -> str:
        """For dry runs: a TCP connection and TLS handshake to the webhook's host; nothing is posted."""
        verify = tls_verify(self.options.ca_bundle, self.setup)
        return probe_endpoint(self._webhook_url(), verify=verify, timeout=self.options.timeout, what=self._what)

    def __call__(self, event: RotationEvent) -> None:
        """POST <webhook_url> (Slack incoming webhook) with {"text", "blocks"}."""
        url = self._webhook_url()
        body = slack_message(event, self.options.title)
        response = self._post(url, body)
        if response.status_code == 429:
            wait = retry_after_seconds(response)
            if wait is not None and wait <= self.options.max_retry_after:
                self._sleep(wait)  # Slack asks clients to wait Retry-After seconds before the next post
                response = self._post(url, body)
        raise_for_slack(response, what=self._what)

    def _post(self, url: str, body: dict[str, Any]) -> requests.Response:
        """POST <webhook_url> with the JSON body; TLS verified (ca_bundle or the system's CAs), no redirects."""
        return send(
            self._session,
            "POST",
            url,
            what=self._what,
            json=body,
            timeout=self.options.timeout,
            verify=tls_verify(self.options.ca_bundle, self.setup),
            allow_redirects=False,
        )
