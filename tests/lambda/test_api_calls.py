"""Secrets Manager API calls per full rotation, counted with a botocore event hook (as bench/lambda_calls.py).

AWS's PostgreSQL single-user sample makes 14 for the same rotation: DescribeSecret on every step and again in
finishSecret, GetRandomPassword, and three reads in setSecret. The goal here is 11 or fewer, even when every step
lands in a new container (nothing cached); in one warm container each version's value is read once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from tests.servers.postgres import PgServer

from .conftest import Function
from .rotation_service import STEPS, SecretsManagerService, sample_event

GOAL = 11


def test_a_full_single_user_rotation_makes_at_most_eleven_calls(
    service: SecretsManagerService, make_function: Callable[..., Function], pg_server: PgServer
) -> None:
    user = f"app_{uuid.uuid4().hex[:8]}"
    password = "Init-" + uuid.uuid4().hex
    pg_server.make_role(user, password)
    try:
        arn = service.create(pg_server.secret(user, password))
        warm = make_function()
        service.rotate(warm, arn)  # the secret now has AWSPREVIOUS, as in steady state (revoke reads it)

        token = service.start_rotation(arn)
        warm.calls.clear()
        for step in STEPS:  # every step in a new container: nothing cached
            make_function()(sample_event(step, arn, token))
        cold = dict(warm.calls)
        assert pg_server.can_login(user, service.value(arn)["password"])

        token = service.start_rotation(arn)
        warm.calls.clear()
        for step in STEPS:
            warm(sample_event(step, arn, token))
        hot = dict(warm.calls)
        assert pg_server.can_login(user, service.value(arn)["password"])
    finally:
        pg_server.drop_role(user)

    for calls in (cold, hot):
        assert calls["DescribeSecret"] == 4, "the contract's checks: once per step, never twice"
        assert "GetRandomPassword" not in calls, "passwords come from the secrets module"
        assert calls["PutSecretValue"] == 1 and calls["UpdateSecretVersionStage"] == 1
    assert sum(cold.values()) <= GOAL, cold
    assert sum(hot.values()) < sum(cold.values()), (hot, cold)
