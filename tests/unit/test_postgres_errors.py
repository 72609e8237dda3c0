"""How the postgres plugin classifies what libpq reports, by the exact texts PostgreSQL sends (its postmaster's
and auth's messages): a server that is restarting or recovering is a TransientError (retried within the step), a
refused password is the step's auth error, anything else a StepError. A message PostgreSQL added (14+: "not yet
accepting connections", while it replays WAL after an immediate restart) once fell through to a refusal, and a
run whose test and unstage both met it was left stuck (tests/faults/test_outage.py under load)."""

from __future__ import annotations

import psycopg
import pytest
from rotator_plugins.rotation.database_secret import DatabaseLogin
from rotator_plugins.rotation.postgres import PostgresPlugin

from rotator import PasswordPolicy, RotationContext, StepError, TestFailed, TransientError
from rotator.model import Credential

PREFIX = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
LOGIN = DatabaseLogin(what="PENDING", host="127.0.0.1", port=5432, user="app", password="Pw-0123456789-abcdef")


def context() -> RotationContext:
    def no_secret(secret_id: str) -> Credential:
        raise AssertionError(secret_id)

    return RotationContext(
        plan_id="p", run_id="r", secret_id="db/p", strategy="single-user", options={},
        password_policy=PasswordPolicy(), read_secret=no_secret,
    )  # fmt: skip


def classify(message: str) -> Exception:
    error = psycopg.OperationalError(PREFIX + message)
    return PostgresPlugin({})._map_error(context(), "test", LOGIN, error, auth_error=TestFailed, fix=None)


@pytest.mark.parametrize(
    "message",
    [
        "the database system is starting up",
        "the database system is shutting down",
        "the database system is in recovery mode",
        "the database system is not yet accepting connections\nDETAIL:  Consistent recovery state has not been yet "
        "reached.",
        "the database system is not accepting connections\nDETAIL:  Hot standby mode is disabled.",
        "sorry, too many clients already",
        "terminating connection due to administrator command",
    ],
)
def test_a_restarting_or_busy_server_is_transient(message: str) -> None:
    assert isinstance(classify(message), TransientError)


def test_a_refused_password_is_the_steps_auth_error_and_never_shows_the_password() -> None:
    error = classify('password authentication failed for user "app"')
    assert isinstance(error, TestFailed) and not isinstance(error, TransientError)
    assert LOGIN.password not in str(error)


def test_anything_else_is_a_plain_step_error() -> None:
    error = classify('database "nope" does not exist')
    assert isinstance(error, StepError) and not isinstance(error, TransientError | TestFailed)
