"""From a leaked string to the plans it belongs to, and from there to a rotation with the old credential revoked.

`rotator leak --value-from FILE`, `rotator leak --scan PATH` and the daemon's leak endpoint (rotator/leak_reports.py)
share this: the text is cut into candidates (rotator.fingerprints.candidates), each candidate is fingerprinted with
the fingerprint key, and the fingerprints are looked up in the journal. No store is read: the journal knows, per
plan, which version is CURRENT and which PREVIOUS still waits for its revoke, so a match says whether the leaked
value still works ("current", "previous") or was already retired by a later rotation ("retired").

Nothing here prints or keeps a candidate: a match names the plan, the version and where the text was found
(file and line, or commit and file), never the value.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotator.engine.runner import BoundPlan, Runner, RunOutcome
from rotator.errors import ConfigError, PlanBusy, describe
from rotator.fingerprints import Fingerprint, FingerprintKey, candidates
from rotator.interfaces import Journal
from rotator.model import RunState, Trigger

# How a leaked version stands today, from the journal.
CURRENT = "current"  # the live credential: rotate it, revoking the old one at once
PREVIOUS = "previous"  # replaced, but still valid until its revoke: rotating revokes it now
RETIRED = "retired"  # a later rotation already revoked it: nothing to do
LIVE = (CURRENT, PREVIOUS)

_LOOKUP_BATCH = 2000  # candidates fingerprinted and looked up at once
_MAX_FILE_BYTES = 20 * 1024 * 1024  # a scanned file larger than this is skipped (and said so)
_SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", ".tox"})


@dataclass(frozen=True)
class Line:
    """One line of scanned text and where it was found (never printed: only `where` is)."""

    where: str
    text: str = field(repr=False)


@dataclass
class LeakMatch:
    """A managed credential found in the scanned text."""

    plan_id: str
    secret_id: str
    version_id: str
    kind: str  # "secret" (a secret value) or "id" (a public key id, such as an AWS AccessKeyId)
    state: str  # CURRENT, PREVIOUS or RETIRED
    found_in: list[str] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan_id,
            "secret": self.secret_id,
            "version": self.version_id,
            "kind": self.kind,
            "state": self.state,
            "found_in": self.found_in,
        }


@dataclass
class ScanReport:
    matches: list[LeakMatch]
    lines: int = 0
    skipped: list[str] = field(default_factory=list)  # files not read, and why

    @property
    def live(self) -> list[LeakMatch]:
        return [m for m in self.matches if m.live]

    def live_plans(self) -> list[str]:
        return list(dict.fromkeys(m.plan_id for m in self.live))


# -- sources of text -------------------------------------------------------------------------------------------


def value_lines(text: str, name: str) -> Iterator[Line]:
    """The lines of a leaked value given directly (`--value-from FILE` or `-`)."""
    for number, line in enumerate(text.splitlines() or [text], start=1):
        yield Line(f"{name}:{number}", line)


def scan_lines(path: Path, skipped: list[str], *, history: bool = True) -> Iterator[Line]:
    """Every text line under `path` (a file, or a directory walked without .git, virtualenvs and the like), and,
    when `path` is in a git work tree and `history` is on, every line ever added or removed in its history (all
    refs): a secret committed and then deleted still leaked."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist", key="--scan", fix="give a file or a directory to scan")
    if path.is_file():
        yield from _file_lines(path, str(path), skipped)
    else:
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
            for name in sorted(files):
                file = Path(root) / name
                yield from _file_lines(file, str(file), skipped)
    if history:
        yield from _git_history_lines(path if path.is_dir() else path.parent, skipped)


def _file_lines(file: Path, where: str, skipped: list[str]) -> Iterator[Line]:
    try:
        if file.is_symlink() or not file.is_file():
            return
        if file.stat().st_size > _MAX_FILE_BYTES:
            skipped.append(f"{where}: larger than {_MAX_FILE_BYTES // (1024 * 1024)} MiB")
            return
        data = file.read_bytes()
    except OSError as exc:
        skipped.append(f"{where}: {exc.strerror}")
        return
    if b"\0" in data[:8192]:
        return  # binary
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        yield Line(f"{where}:{number}", line)


def _git_history_lines(directory: Path, skipped: list[str]) -> Iterator[Line]:
    """Lines added or removed by every commit reachable from any ref (`git log --all -p`), as `COMMIT PATH`."""
    try:
        inside = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        skipped.append(f"{directory}: git history not scanned (git is not installed)")
        return
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return
    process = subprocess.Popen(
        ["git", "-C", str(directory), "log", "--all", "-p", "--no-color", "--no-ext-diff", "--format=commit %H"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    commit, path = "", ""
    try:
        for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if line.startswith("commit ") and len(line) == 47:
                commit, path = line[7:19], ""
            elif line.startswith("+++ ") or line.startswith("--- "):
                name = line[4:]
                if name != "/dev/null":
                    path = name[2:] if name[:2] in ("a/", "b/") else name
            elif line[:1] in ("+", "-") and commit:
                yield Line(f"git {commit} {path}", line[1:])
    finally:
        process.stdout.close()
        process.wait()


# -- matching --------------------------------------------------------------------------------------------------


def live_versions(journal: Journal) -> dict[tuple[str, str], str]:
    """(plan, version) -> CURRENT or PREVIOUS, from the journal alone: the version of each plan's newest
    promoted run, and the PREVIOUS of runs still awaiting their revoke."""
    states: dict[tuple[str, str], str] = {}
    for record in journal.runs_in_state(RunState.AWAITING_REVOKE):
        if record.previous_version_id:
            states[(record.plan_id, record.previous_version_id)] = PREVIOUS
    for plan_id, record in journal.last_successes().items():
        if record.version_id:
            states[(plan_id, record.version_id)] = CURRENT
    return states


def find_leaks(journal: Journal, key: FingerprintKey, lines: Iterable[Line]) -> ScanReport:
    """The managed credentials whose fingerprints match a candidate of `lines`, newest version first per plan."""
    report = ScanReport(matches=[])
    by_version: dict[tuple[str, str], LeakMatch] = {}
    pending: dict[str, set[str]] = {}  # digest -> where it was found

    def look_up() -> None:
        if not pending:
            return
        for fingerprint in journal.find_fingerprints(list(pending)):
            _add(by_version, fingerprint, pending[fingerprint.digest])
        pending.clear()

    for line in lines:
        report.lines += 1
        for candidate in candidates(line.text):
            pending.setdefault(key.digest(candidate), set()).add(line.where)
        if len(pending) >= _LOOKUP_BATCH:
            look_up()
    look_up()
    states = live_versions(journal)
    for (plan_id, version_id), match in by_version.items():
        match.state = states.get((plan_id, version_id), RETIRED)
        match.found_in.sort()
    order = {CURRENT: 0, PREVIOUS: 1, RETIRED: 2}
    report.matches = sorted(by_version.values(), key=lambda m: (order[m.state], m.plan_id, m.version_id))
    return report


def _add(by_version: dict[tuple[str, str], LeakMatch], fingerprint: Fingerprint, where: Iterable[str]) -> None:
    slot = (fingerprint.plan_id, fingerprint.version_id)
    match = by_version.get(slot)
    if match is None:
        match = by_version[slot] = LeakMatch(
            fingerprint.plan_id, fingerprint.secret_id, fingerprint.version_id, fingerprint.kind, RETIRED
        )
    elif fingerprint.kind == "secret":
        match.kind = "secret"  # a secret value found outranks a public id found
    match.found_in.extend(w for w in where if w not in match.found_in)


# -- rotating what leaked ---------------------------------------------------------------------------------------


def leak_reason(found_in: Iterable[str], source: str) -> str:
    """The reason kept in the history of a leak rotation: where it was found, never the value."""
    places = list(dict.fromkeys(found_in))
    shown = ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
    return f"leak reported by {source}: found in {shown}" if shown else f"leak reported by {source}"


def rotate_one(runner: Runner, bp: BoundPlan, reason: str | None, operator: str | None = None) -> RunOutcome:
    """One leak rotation: the old credential revoked right after promote, trigger `leak`, the reason recorded."""
    return runner.rotate(bp, trigger=Trigger.LEAK, reason=reason, operator=operator, revoke_old_now=True)


def rotate_leaked(
    runner: Runner,
    plans: list[BoundPlan],
    reasons: dict[str, str],
    *,
    concurrency: int,
    operator: str | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Rotate each plan now with its old credential revoked right after promote (a PREVIOUS still waiting for
    its revoke is revoked first, as every new run does); each plan isolated from the others' failures."""

    def one(bp: BoundPlan) -> RunOutcome:
        try:
            return rotate_one(runner, bp, reasons.get(bp.plan_id), operator)
        except PlanBusy as exc:
            return RunOutcome(bp.plan_id, "busy", error=str(exc))
        except Exception as exc:
            return RunOutcome(bp.plan_id, "error", error=describe(exc))

    outcomes: list[RunOutcome] = []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(plans) or 1))) as pool:
        for future in as_completed([pool.submit(one, bp) for bp in plans]):
            outcome = future.result()
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
    order = {bp.plan_id: index for index, bp in enumerate(plans)}
    return sorted(outcomes, key=lambda o: order.get(o.plan_id, 0))
