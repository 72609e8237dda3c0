"""lambda/template.yaml (SAM) and lambda/iam-policy.json: the function, its log group, the rotation schedule on the
secret, the VPC parameters, and a least-privilege policy: exactly the Secrets Manager actions the function's code
calls (read off the AWS store's docstrings, as config/iam-policy-daemon.json is), on that secret only, plus the
admin secret for alternating users and KMS only through Secrets Manager when a key is set."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import yaml
from rotator_plugins.stores.aws_secretsmanager import AwsSecretsManagerStore

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "lambda" / "template.yaml"
POLICY = ROOT / "lambda" / "iam-policy.json"
# The store methods the rotation function calls (rotator.lambda_adapter.RotationStore), and for the admin secret.
FUNCTION_METHODS = ("describe_rotation", "get_version", "put_version", "move_current")
ADMIN_METHODS = ("get",)


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !Sub, !If, ...) read as their long forms."""


def _intrinsic(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)  # noqa: S506 (a SafeLoader)
    return loaded


def named_actions(*methods: str) -> set[str]:
    client = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    known = set(client.meta.service_model.operation_names)
    found: set[str] = set()
    for name in methods:
        doc = getattr(AwsSecretsManagerStore, name).__doc__ or ""
        found |= {f"secretsmanager:{w}" for w in re.findall(r"\b[A-Z][A-Za-z]+\b", doc) if w in known}
    return found


def template_statements() -> dict[str, dict[str, Any]]:
    role = template()["Resources"]["RotationRole"]["Properties"]
    [policy] = role["Policies"]
    statements = {}
    for item in policy["PolicyDocument"]["Statement"]:
        if "Fn::If" in item:  # [condition, the statement, AWS::NoValue]
            item = item["Fn::If"][1]
        statements[item["Sid"]] = item
    return statements


def json_statements() -> dict[str, dict[str, Any]]:
    policy = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    return {s["Sid"]: s for s in policy["Statement"]}


def as_set(value: str | list[str]) -> set[str]:
    return {value} if isinstance(value, str) else set(value)


def test_the_function() -> None:
    resources = template()["Resources"]
    function = resources["RotationFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    props = function["Properties"]
    assert props["Handler"] == "handler.lambda_handler" and props["Runtime"] == "python3.11"
    assert props["CodeUri"] == "build/rotator-lambda.zip"
    assert props["Architectures"] == [{"Ref": "Architecture"}]
    assert template()["Parameters"]["Architecture"]["AllowedValues"] == ["x86_64", "arm64"]
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "RotationLogGroup"}
    assert resources["RotationLogGroup"]["Type"] == "AWS::Logs::LogGroup"
    vpc = props["VpcConfig"]["Fn::If"][1]
    assert vpc == {"SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"}}
    for name in ("SubnetIds", "SecurityGroupIds"):
        assert template()["Parameters"][name]["Type"] == "CommaDelimitedList"


def test_every_environment_variable_is_one_the_function_reads() -> None:
    adapter = (ROOT / "rotator" / "lambda_settings.py").read_text()  # the function reads its variables there
    variables = template()["Resources"]["RotationFunction"]["Properties"]["Environment"]["Variables"]
    for name in variables:
        assert f'"{name}"' in adapter, f"{name} is set by the template but never read"
    for sample_variable in ("SECRETS_MANAGER_ENDPOINT", "EXCLUDE_CHARACTERS", "PASSWORD_LENGTH"):
        assert sample_variable in variables
    default = template()["Parameters"]["ExcludeCharacters"]["Default"]
    assert default == ":/@\"'\\", "the samples' default"


def test_the_schedule_and_the_permission_name_the_secret() -> None:
    resources = template()["Resources"]
    schedule = resources["RotationSchedule"]
    assert schedule["Type"] == "AWS::SecretsManager::RotationSchedule"
    assert schedule["Properties"]["SecretId"] == {"Ref": "SecretArn"}
    assert schedule["Properties"]["RotationLambdaARN"] == {"Fn::GetAtt": ["RotationFunction", "Arn"]}
    assert schedule["Properties"]["RotationRules"]["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert schedule["DependsOn"] == "SecretsManagerMayInvoke"
    permission = resources["SecretsManagerMayInvoke"]["Properties"]
    assert permission["Principal"] == "secretsmanager.amazonaws.com"
    assert permission["Action"] == "lambda:InvokeFunction"
    assert permission["SourceArn"] == {"Ref": "SecretArn"}


def test_the_policy_grants_exactly_what_the_code_calls_on_that_secret_only() -> None:
    for statements in (template_statements(), json_statements()):
        assert set(statements) == {"RotateThisSecretOnly", "ReadTheAdminSecretNamedInMasterarn",
                                   "OnlyIfTheSecretUsesACustomerManagedKey", "WriteItsOwnLogs"}  # fmt: skip
        rotate = statements["RotateThisSecretOnly"]
        assert as_set(rotate["Action"]) == named_actions(*FUNCTION_METHODS)
        assert len(named_actions(*FUNCTION_METHODS)) == 4
        admin = statements["ReadTheAdminSecretNamedInMasterarn"]
        assert as_set(admin["Action"]) == named_actions(*ADMIN_METHODS)
        kms = statements["OnlyIfTheSecretUsesACustomerManagedKey"]
        assert as_set(kms["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
        assert "kms:ViaService" in kms["Condition"]["StringEquals"]
        logs = statements["WriteItsOwnLogs"]
        assert as_set(logs["Action"]) == {"logs:CreateLogStream", "logs:PutLogEvents"}
        for statement in statements.values():
            assert statement["Effect"] == "Allow"
            assert statement["Resource"] != "*" and all("*" not in a for a in as_set(statement["Action"]))
    template_rotate = template_statements()["RotateThisSecretOnly"]
    assert template_rotate["Resource"] == {"Ref": "SecretArn"}, "that secret only"
    json_rotate = json_statements()["RotateThisSecretOnly"]
    assert json_rotate["Resource"].startswith("arn:aws:secretsmanager:") and ":secret:" in json_rotate["Resource"]


def test_optional_statements_depend_on_their_parameters() -> None:
    role = template()["Resources"]["RotationRole"]["Properties"]
    conditional = [s["Fn::If"] for s in role["Policies"][0]["PolicyDocument"]["Statement"] if "Fn::If" in s]
    assert {c[0]: c[1]["Sid"] for c in conditional} == {
        "HasMasterSecret": "ReadTheAdminSecretNamedInMasterarn",
        "HasKmsKey": "OnlyIfTheSecretUsesACustomerManagedKey",
    }
    assert all(c[2] == {"Ref": "AWS::NoValue"} for c in conditional)


def test_cfn_lint_accepts_the_template() -> None:
    """cfn-lint (installed with moto[server]) transforms the SAM template and checks every resource's schema."""
    from cfnlint.api import lint_file

    problems = lint_file(TEMPLATE)
    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in problems] == []
