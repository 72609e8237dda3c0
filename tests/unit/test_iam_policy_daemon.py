"""config/iam-policy-daemon.json is read off the AWS store's docstrings: exactly the Secrets Manager actions the
rotation path calls (get, put_pending, promote, unpromote, discard_pending), on the plans' secret ARNs only.
CreateSecret (and the PutSecretValue of `rotator store put`) are for an operator seeding secrets, not the daemon."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore

POLICY = Path(__file__).resolve().parents[2] / "config" / "iam-policy-daemon.json"
ROTATION_METHODS = ("get", "put_pending", "promote", "unpromote", "discard_pending")


def operations() -> set[str]:
    client = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    return set(client.meta.service_model.operation_names)


def named_actions(*methods: str) -> set[str]:
    known = operations()
    found: set[str] = set()
    for name in methods:
        doc = getattr(AwsSecretsManagerStore, name).__doc__ or ""
        found |= {f"secretsmanager:{word}" for word in re.findall(r"\b[A-Z][A-Za-z]+\b", doc) if word in known}
    return found


def statements() -> list[dict[str, Any]]:
    policy = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    result: list[dict[str, Any]] = policy["Statement"]
    return result


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_every_store_method_names_its_aws_actions() -> None:
    for name in (*ROTATION_METHODS, "put_current"):
        assert named_actions(name), f"AwsSecretsManagerStore.{name} names no AWS action in its docstring"


def test_the_policy_grants_exactly_the_rotation_actions() -> None:
    granted = {a for s in statements() for a in as_list(s["Action"]) if a.startswith("secretsmanager:")}
    assert granted == named_actions(*ROTATION_METHODS)
    assert "secretsmanager:CreateSecret" not in granted


def test_no_wildcards_and_secret_arns_only() -> None:
    for statement in statements():
        assert statement["Effect"] == "Allow"
        assert all("*" not in action for action in as_list(statement["Action"]))
        for resource in as_list(statement["Resource"]):
            assert resource != "*"
            if any(a.startswith("secretsmanager:") for a in as_list(statement["Action"])):
                assert resource.startswith("arn:aws:secretsmanager:") and ":secret:" in resource


def test_kms_only_through_secrets_manager() -> None:
    for statement in statements():
        if any(a.startswith("kms:") for a in as_list(statement["Action"])):
            assert statement["Condition"]["StringEquals"]["kms:ViaService"].startswith("secretsmanager.")
