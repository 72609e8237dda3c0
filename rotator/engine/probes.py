"""What can be learned about a plan without changing anything: a dry run of its rotation (`rotate-now --dry-run`),
of its drift repair (`reconcile --dry-run`), and reconcile's check whether CURRENT still logs in. Nothing here
writes to the store, the target or the journal.
"""

from __future__ import annotations

from datetime import timedelta

from rotator.engine.alerts import fix_of
from rotator.engine.plan_store import PlanStore, core_for
from rotator.engine.plans import BoundPlan, RunOutcome, RunSettings, plugin_name
from rotator.engine.steps import StepCore
from rotator.errors import AuthenticationFailed, RotatorError, StepError, describe
from rotator.interfaces import AdminReset, DryRunProbe, UsageProbe
from rotator.model import SUCCESS_EVENTS, Credential, Outcome, RunState
from rotator.passwords import generate_password
from rotator.retry import Deadline, call_with_retry

OPEN_STATES = (RunState.RUNNING, RunState.ROLLING_BACK, RunState.STUCK)


def probe_core(settings: RunSettings, bp: BoundPlan) -> StepCore:
    """A step core that is only asked questions: its "run" is never journaled and never writes."""
    return core_for(bp, PlanStore(bp.store, bp.plan_id, bp.secret_id, "probe", Deadline(settings.step_timeout)))


def current_refused(core: StepCore, plugin: AdminReset, current: Credential) -> str | None:
    """None when CURRENT logs in; the refusal (one line) when the target refuses it. Other errors raise."""
    try:
        core.retry(lambda: plugin.check_current(core.ctx, current))
    except AuthenticationFailed as exc:
        return describe(exc)
    return None


def reconcile_dry_run(settings: RunSettings, bp: BoundPlan, plugin: AdminReset) -> RunOutcome:
    outcome = RunOutcome(bp.plan_id, Outcome.DRY_RUN)
    core = probe_core(settings, bp)
    try:
        current = core.current()
        refused = current_refused(core, plugin, current)
        admin = core.retry(lambda: plugin.check_admin(core.ctx, current))
    except Exception as exc:
        outcome.outcome = Outcome.ERROR
        outcome.error = describe(exc)
        outcome.fix = fix_of(exc)
        return outcome
    if refused is None:
        outcome.notes.append("CURRENT logs in at the target: reconcile would change nothing")
    else:
        outcome.notes.append(f"CURRENT is refused ({refused}): reconcile would reset it through {admin}")
    outcome.notes.append(f"{admin} logs in")
    return outcome


def dry_run(settings: RunSettings, bp: BoundPlan) -> RunOutcome:
    """What a rotation of `bp` would do now, probing what can be probed and changing nothing: the store has
    CURRENT; CURRENT logs in (the plugin's DryRunProbe, which also checks the admin where the strategy needs
    one); the password policy can produce a password; required notifiers answer their probe, where they have
    one; the lease is free. Notes are the steps it would take, in order; no note speaks of a PENDING."""
    outcome = RunOutcome(bp.plan_id, Outcome.DRY_RUN)
    notes = outcome.notes
    holder = settings.journal.lease_of(bp.plan_id)
    if holder is not None:
        notes.append(f"busy now: lease held by {holder.host} pid {holder.pid}")
    core = probe_core(settings, bp)
    plugin = bp.plugin
    try:
        current = core.current()
        notes.append(f"{plugin_name(plugin)}, strategy {bp.strategy}: CURRENT is version {current.version_id}")
        if isinstance(plugin, DryRunProbe):
            notes.extend(core.retry(lambda: plugin.dry_run(core.ctx, current)))
        else:
            _probe_with_test(core, current)
            notes.append("CURRENT passes the plugin's probe")
        if bp.reconcile_auto and isinstance(plugin, AdminReset):
            admin = core.retry(lambda: plugin.check_admin(core.ctx, current))
            notes.append(f"reconcile = auto: CURRENT is checked first; {admin} logs in to reset it if refused")
        generate_password(bp.password_policy)  # raises with the reason when the policy cannot produce one
    except Exception as exc:
        outcome.outcome = Outcome.ERROR
        outcome.error = describe(exc)
        outcome.fix = fix_of(exc)
        return outcome
    open_runs = [r.run_id for r in settings.journal.runs_in_state(*OPEN_STATES, plan_id=bp.plan_id)]
    if open_runs:
        notes.append(f"interrupted runs are finished or rolled back first: {', '.join(open_runs)}")
    notes.append("steps: create (a new value, stored before it is applied) -> stage -> test -> promote")
    notes.extend(_notifier_lines(settings, bp, outcome))
    notes.append(_revoke_line(bp))
    return outcome


def _probe_with_test(core: StepCore, current: Credential) -> None:
    """A plugin without DryRunProbe: its `test` with CURRENT. Its messages name the credential it was given
    as PENDING (that is what `test` is for), so they are reworded: here it is CURRENT."""
    try:
        core.test(current)
    except RotatorError as exc:
        raise StepError(str(exc).replace("PENDING", "CURRENT")) from None


def _notifier_lines(settings: RunSettings, bp: BoundPlan, outcome: RunOutcome) -> list[str]:
    if not bp.notifiers:
        return ["notify: no notifiers"]
    lines = []
    for name, notifier in bp.notifiers:
        kinds = ", ".join(sorted(bp.notifier_events.get(name, SUCCESS_EVENTS)))
        required = " (required: revoke waits for it)" if name in bp.required_notifiers else ""
        line = f"notify {name}{required}: events {kinds}"
        check = getattr(notifier, "probe", None)
        if callable(check):
            try:
                line += f"; {call_with_retry(check, attempts=2, deadline_seconds=settings.step_timeout)}"
            except Exception as exc:
                line += f"; probe failed: {describe(exc)}"
                if name in bp.required_notifiers:
                    outcome.outcome = Outcome.ERROR
                    outcome.error = f"required notifier {name} does not answer: {describe(exc)}"
                    outcome.fix = fix_of(exc)
        lines.append(line)
    return lines


def _revoke_line(bp: BoundPlan) -> str:
    grace = "at once" if bp.grace <= timedelta(0) else f"after grace {bp.grace}"
    gates = []
    if bp.required_notifiers:
        gates.append("until " + ", ".join(sorted(bp.required_notifiers)) + " succeeded")
    if isinstance(bp.plugin, UsageProbe):
        gates.append(f"while the old credential is still in use, up to {bp.revoke_deadline}")
    gated = f", waiting {' and '.join(gates)}" if gates else ""
    return f"revoke: the old credential is revoked {grace}{gated}"
