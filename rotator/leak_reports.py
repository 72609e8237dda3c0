"""The daemon's leak endpoint: a scanner reports a leaked credential, the daemon rotates it with the old one
revoked at once.

Off by default; `[rotator.leak_reports]` turns it on, listening on 127.0.0.1:9471 unless `listen` says otherwise.
One route, `POST /leak-reports`, takes either shape:

- GitHub secret scanning's partner alert: a JSON array of `{"token", "type", "url", "source"}` objects;
- AWS Health's exposed-key event as EventBridge delivers it: `{"source": "aws.health", "detail": {"eventTypeCode":
  "AWS_RISK_CREDENTIALS_EXPOSED", "affectedEntities": [{"entityValue": "AKIA..."}]}}` (matched by the key id).

Every request is authenticated with an HMAC-SHA256 under the endpoint's key (`key = "env:VAR"` or `"file:PATH"`):
`X-Rotator-Timestamp: <unix seconds>` and `X-Rotator-Signature: sha256=<hex of HMAC(key, "<timestamp>." + body)>`.
A timestamp further than `max_age` from now is refused, and so is a signature already seen within `max_age` (a
replayed report), so a captured request is worth nothing after a few minutes and nothing at all twice. Neither
GitHub nor EventBridge signs with a shared key itself: a relay in front (a small function that receives GitHub's
ECDSA-signed alert or the EventBridge rule's target, checks it, and signs it for us) does.

What a report contains is never logged or answered back: the response names the matched plans and their state only.
Matching is by keyed fingerprint in the journal (rotator/leaks.py); no store is read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from rotator.components import resolve_secret_ref
from rotator.errors import ConfigError, describe
from rotator.fingerprints import FingerprintKey
from rotator.interfaces import Journal
from rotator.leaks import Line, ScanReport, find_leaks, leak_reason, rotate_leaked
from rotator.logs import get_logger

if TYPE_CHECKING:
    from rotator.config import Config
    from rotator.engine.runner import Runner
    from rotator.workspace import Workspace

log = get_logger(__name__)

ROUTE = "/leak-reports"
MAX_BODY = 1024 * 1024
TIMESTAMP_HEADER = "X-Rotator-Timestamp"
SIGNATURE_HEADER = "X-Rotator-Signature"
AWS_EXPOSED_KEY_EVENT = "AWS_RISK_CREDENTIALS_EXPOSED"


class ReportRefused(Exception):
    """A report that is not authentic, fresh, or of a known shape: (HTTP status, public message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp` (what a relay computes)."""
    return "sha256=" + hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


class ReplayGuard:
    """Signatures seen within the freshness window: a second delivery of the same signed request is refused."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, signature: str, now: float) -> bool:
        with self._lock:
            for old in [s for s, at in self._seen.items() if at < now - 2 * self.max_age]:
                del self._seen[old]
            if signature in self._seen:
                return False
            self._seen[signature] = now
            return True


def authenticate(key: bytes, headers: Any, body: bytes, guard: ReplayGuard, now: float | None = None) -> None:
    """Raises ReportRefused(401) unless the request is signed with `key`, fresh, and not seen before."""
    now = time.time() if now is None else now
    stamp, signature = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    if not stamp or not signature:
        raise ReportRefused(401, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise ReportRefused(401, f"{TIMESTAMP_HEADER} is not unix seconds") from None
    if abs(now - timestamp) > guard.max_age:
        raise ReportRefused(401, "stale or future timestamp")
    if not hmac.compare_digest(sign(key, timestamp, body), signature.strip()):
        raise ReportRefused(401, "bad signature")
    if not guard.first_time(signature.strip(), now):
        raise ReportRefused(409, "this report was already received")


@dataclass(frozen=True)
class Report:
    """A parsed report: the lines to match and who sent it (for the rotation's recorded reason)."""

    source: str
    lines: list[Line]


def parse_report(body: bytes) -> Report:
    """GitHub's partner alert array or AWS Health's exposed-key event; ReportRefused(400) for anything else."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ReportRefused(400, "the body is not JSON") from None
    if isinstance(data, list):
        lines: list[Line] = []
        for index, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("token"), str):
                raise ReportRefused(400, f"item {index} has no token (GitHub secret scanning's shape)")
            where = " ".join(str(item[k]) for k in ("url", "source") if isinstance(item.get(k), str)) or "github"
            lines.append(Line(f"github {item.get('type', 'token')} {where}".strip(), item["token"]))
        return Report("GitHub secret scanning", lines)
    if isinstance(data, dict) and data.get("source") == "aws.health":
        detail = data.get("detail")
        if not isinstance(detail, dict) or detail.get("eventTypeCode") != AWS_EXPOSED_KEY_EVENT:
            raise ReportRefused(400, f"an aws.health event other than {AWS_EXPOSED_KEY_EVENT}")
        entities = detail.get("affectedEntities")
        if not isinstance(entities, list):
            raise ReportRefused(400, "the event has no affectedEntities")
        lines = [
            Line(f"aws health {detail.get('eventArn', AWS_EXPOSED_KEY_EVENT)}", entity["entityValue"])
            for entity in entities
            if isinstance(entity, dict) and isinstance(entity.get("entityValue"), str)
        ]
        return Report("AWS Health (exposed access key)", lines)
    raise ReportRefused(400, "unknown report shape: send GitHub's alert array or an AWS Health event")


# Rotates the given plans with their old credentials revoked at once; reasons by plan. Runs in the background.
RotateLeaked = Callable[[list[str], dict[str, str]], None]


@dataclass(frozen=True)
class LeakContext:
    """What a report is matched against and acted on with: the daemon's current config (a SIGHUP reload swaps it
    without restarting the endpoint)."""

    journal: Journal
    fingerprint_key: FingerprintKey
    rotate: RotateLeaked
    is_manual: Callable[[str], bool] = lambda _plan: False


class LeakReportServer:
    """The endpoint. `start()` serves in a thread; `close()` stops it and waits for rotations in flight.
    `context` is asked for each report (a fixed LeakContext, or a callable returning the current one)."""

    def __init__(
        self,
        address: tuple[str, int],
        key: bytes,
        max_age: float,
        context: LeakContext | Callable[[], LeakContext],
    ) -> None:
        self.key = key
        self.guard = ReplayGuard(max_age)
        self._context = context
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status, answer = server.handle(self.path, self.headers, self._body())
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self.send_error(405, "POST a leak report")

            def _body(self) -> bytes | None:
                try:
                    length = int(self.headers.get("Content-Length") or "-1")
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY:
                    return None
                return self.rfile.read(length)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("leak endpoint request", line=format % args)

        self.httpd = ThreadingHTTPServer(address, Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="leak-reports", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("leak endpoint listening", address=f"{self.address[0]}:{self.address[1]}", route=ROUTE)

    def close(self, wait_seconds: float = 60.0) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(wait_seconds)

    def handle(self, path: str, headers: Any, body: bytes | None) -> tuple[int, dict[str, Any]]:
        """One request: (HTTP status, JSON answer). Never raises; never echoes what the report contained."""
        if path.split("?", 1)[0] != ROUTE:
            return 404, {"error": f"POST leak reports to {ROUTE}"}
        if body is None:
            return 413, {"error": f"a report needs a Content-Length of at most {MAX_BODY} bytes"}
        try:
            authenticate(self.key, headers, body, self.guard)
            report = parse_report(body)
            context = self._context if isinstance(self._context, LeakContext) else self._context()
            scan = find_leaks(context.journal, context.fingerprint_key, report.lines)
        except ReportRefused as exc:
            log.warning("leak report refused", status=exc.status, error=str(exc))
            return exc.status, {"error": str(exc)}
        except Exception as exc:
            log.error("leak report failed", error=describe(exc))
            return 500, {"error": "the report could not be matched; see the daemon's log"}
        return 202, self._act(context, report, scan)

    def _act(self, context: LeakContext, report: Report, scan: ScanReport) -> dict[str, Any]:
        live = [m for m in scan.live if not context.is_manual(m.plan_id)]
        by_hand = sorted({m.plan_id for m in scan.live if context.is_manual(m.plan_id)})
        plans = list(dict.fromkeys(m.plan_id for m in live))
        reasons = {
            plan: leak_reason([w for m in live if m.plan_id == plan for w in m.found_in], report.source)
            for plan in plans
        }
        log.warning(
            "leak reported",
            source=report.source,
            matched=len(scan.matches),
            rotating=plans,
            rotate_by_hand=by_hand,
        )
        if plans:
            worker = threading.Thread(
                target=self._rotate, args=(context, plans, reasons), name="leak-rotation", daemon=True
            )
            with self._lock:
                self._workers = [w for w in self._workers if w.is_alive()] + [worker]
            worker.start()
        return {
            "received": len(report.lines),
            "matched": [{"plan": m.plan_id, "version": m.version_id, "state": m.state} for m in scan.matches],
            "rotating": plans,
            "rotate_by_hand": by_hand,
        }

    def _rotate(self, context: LeakContext, plans: list[str], reasons: dict[str, str]) -> None:
        try:
            context.rotate(plans, reasons)
        except Exception as exc:
            log.error("leak rotation failed", plans=plans, error=describe(exc))


MIN_KEY_LENGTH = 32


def endpoint_key(config: Config) -> bytes:
    """The endpoint's HMAC key from `[rotator.leak_reports] key` (env: or file:), at least MIN_KEY_LENGTH
    characters; a ConfigError naming the key otherwise."""
    section = config.model.rotator.leak_reports
    assert section is not None
    where = "rotator.leak_reports.key"
    value = resolve_secret_ref(section.key, key=where, setup=config.setup("rotator")).strip()
    if len(value) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"the leak endpoint key is {len(value)} characters; it needs at least {MIN_KEY_LENGTH}",
            file=str(config.path),
            key=where,
            fix="use a random one: openssl rand -base64 32",
        )
    return value.encode()


def server_for(config: Config, context: Callable[[], LeakContext]) -> LeakReportServer | None:
    """The endpoint `[rotator.leak_reports]` asks for (None without the section), bound but not started. The
    fingerprint key must exist: without it nothing could ever match."""
    section = config.model.rotator.leak_reports
    if section is None:
        return None
    key = endpoint_key(config)
    try:
        return LeakReportServer(section.host_port, key, section.max_age.total_seconds(), context)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {section.listen}: {exc.strerror}",
            file=str(config.path),
            key="rotator.leak_reports.listen",
            fix="choose a free HOST:PORT",
        ) from None


def workspace_context(workspace: Workspace, runner: Runner) -> LeakContext:
    """A LeakContext over one config's workspace: the journal, the fingerprint key, and rotations on its runner."""
    key = workspace.fingerprint_key
    if key is None:
        raise ConfigError(
            "the leak endpoint needs the fingerprint key, and there is none",
            file=str(workspace.config.path),
            key="rotator.fingerprint_key",
            fix="run `rotator init` (it makes state_dir/fingerprint.key), or set [rotator] fingerprint_key",
        )
    concurrency = workspace.config.model.rotator.concurrency

    def rotate(plan_ids: list[str], reasons: dict[str, str]) -> None:
        plans = [workspace.bind(workspace.config.plan(plan_id)) for plan_id in plan_ids]
        for outcome in rotate_leaked(runner, plans, reasons, concurrency=concurrency):
            log.warning("leak rotation", plan=outcome.plan_id, outcome=outcome.outcome, error=outcome.error)

    return LeakContext(workspace.journal, key, rotate, lambda plan_id: workspace.config.plan(plan_id).is_manual)
