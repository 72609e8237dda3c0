"""config/iam-policy-aws-iam-key.json is read off the aws-iam-key plugin's docstrings: it grants exactly the IAM
actions its methods name, on IAM users only (a path of users under rotation, in the example).

sts:GetCallerIdentity, which `test` calls, is signed with the new key (the rotated user's identity, not the
rotator's) and needs no permission (AWS STS API reference: "No permissions are required to perform this
operation"), so the policy does not grant it. With the plugin's `role_arn` option, attach the policy to that role;
the rotator's own identity then needs sts:AssumeRole on it (and the role's trust policy must allow that).
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path
from typing import Any

import boto3
import rotator_plugins.rotation.aws_iam_key as module
from rotator_plugins.rotation.aws_iam_key import AwsIamKeyPlugin

POLICY = Path(__file__).resolve().parents[2] / "config" / "iam-policy-aws-iam-key.json"
# Every method the engine calls (RotationPlugin, Reconciler) and the plugin's extra `last_used`.
METHODS = ("create", "stage", "test", "revoke", "unstage", "discard", "reconcile", "last_used")
NAMED = re.compile(r"``(iam|sts):([A-Za-z]+)``")


def operations(service: str) -> set[str]:
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    return set(client.meta.service_model.operation_names)


def named_actions(*methods: str) -> set[str]:
    """The actions the methods' docstrings name, as ``iam:Action``."""
    found: set[str] = set()
    for name in methods:
        doc = getattr(AwsIamKeyPlugin, name).__doc__ or ""
        found |= {f"{service}:{action}" for service, action in NAMED.findall(doc)}
    return found


def called_actions() -> set[str]:
    """The IAM actions the code calls: the action argument of every `self._call(ctx, step, "Action", ...)`."""
    tree = ast.parse(inspect.getsource(module))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_call":
            action = node.args[2]
            assert isinstance(action, ast.Constant) and isinstance(action.value, str), ast.unparse(node)
            found.add(f"iam:{action.value}")
    return found


def statements() -> list[dict[str, Any]]:
    policy = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    result: list[dict[str, Any]] = policy["Statement"]
    return result


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def granted() -> set[str]:
    return {action for statement in statements() for action in as_list(statement["Action"])}


def test_every_named_action_exists_in_the_aws_api() -> None:
    known = {f"iam:{op}" for op in operations("iam")} | {f"sts:{op}" for op in operations("sts")}
    named = named_actions(*METHODS)
    assert named, "the plugin's docstrings name no action"
    assert named <= known, f"not AWS operations: {sorted(named - known)}"


def test_the_docstrings_name_exactly_what_the_code_calls() -> None:
    assert {a for a in named_actions(*METHODS) if a.startswith("iam:")} == called_actions()
    for name in ("create", "revoke", "discard", "reconcile", "last_used"):
        assert any(a.startswith("iam:") for a in named_actions(name)), f"{name} names no IAM action"


def test_the_policy_grants_exactly_the_iam_actions_named() -> None:
    named = named_actions(*METHODS)
    assert granted() == {a for a in named if a.startswith("iam:")}
    assert {a for a in named if a.startswith("sts:")} == {"sts:GetCallerIdentity"}  # needs no grant (see above)


def test_iam_users_only_and_no_wildcard_action() -> None:
    for statement in statements():
        assert statement["Effect"] == "Allow"
        assert "Condition" not in statement or statement["Condition"]
        for action in as_list(statement["Action"]):
            assert "*" not in action and action.startswith("iam:")
        for resource in as_list(statement["Resource"]):
            assert re.fullmatch(r"arn:aws:iam::\d{12}:user/[\w+=,.@/-]*[\w+=,.@*-]", resource), resource
            assert not resource.endswith(":user/*"), "every user of the account: narrow it to a path or names"
