"""The template's IAM roles, enforced on every AWS call a component makes in the tests.

moto's own IAM enforcement checks only an action's name for DynamoDB, Step Functions, Lambda
and most other services: it asks every policy about resource "*" and passes no condition keys,
so a statement scoped to the jobs table, or to `dynamodb:LeadingKeys`, never matches and a
policy of `"Resource": "*"` always does. What matters here is exactly what that leaves out (a
read-only role writing one item of the table), so the tests evaluate the policies themselves:

- `template.yaml` goes through the SAM transform (aws-sam-translator, as `sam deploy` does), so
  that policy templates such as DynamoDBCrudPolicy expand to the statements AWS would get;
- its intrinsics are resolved against the local deployment (the tests' table, bucket, stream);
- every call of a boto3 client made by `beamjobs.aws.clients` is checked, before it is sent, as
  AWS would check it: action, resource ARN (a table, its index, an object key), and the
  condition keys the template uses (`dynamodb:LeadingKeys`, `iam:PassedToService`,
  `ecs:CreateAction`). A refused call raises AWS's AccessDenied error, and is recorded.

Who is calling is the component acting on the thread: set with `acting_as` (the handlers, each
under its function's role), or a thread named `shim-…` (the shim, under its task role). Calls
of the tests themselves (setting up a job, reading what a component wrote) act as no role and
are not checked.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import fnmatch
import functools
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from botocore.exceptions import ClientError
from samtranslator.translator.transform import transform

from beamjobs.local.provision import load_template

PARTITION = "aws"
REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK = "beamjobs"

# The component a thread acts as (a role's logical id in the transformed template).
_acting: contextvars.ContextVar[str | None] = contextvars.ContextVar("acting", default=None)
# Threads of the shim's own (its blocking pool, its identity checks, its loop in the tests).
SHIM_THREADS = "shim-"
SHIM_ROLE = "ShimTaskRole"


class NoManagedPolicies:
    """The SAM translator asks IAM for AWS managed policies' ARNs; offline, it builds them."""

    def load(self) -> dict[str, str]:
        return {}


def sam_transform(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation gets it after `sam deploy`'s transform (the template's
    code locations must already be S3 URIs)."""
    # The translator asks a boto3 session of its own for the region, whatever the parameters say.
    region = {"AWS_DEFAULT_REGION": parameters.get("AWS::Region", REGION)}
    with mock.patch.dict(os.environ, region):
        return dict(transform(template, parameters, NoManagedPolicies()))


@contextlib.contextmanager
def acting_as(role: str | None) -> Iterator[None]:
    """Calls made on this thread (and tasks it starts) within are made with `role`."""
    token = _acting.set(role)
    try:
        yield
    finally:
        _acting.reset(token)


def acting_role() -> str | None:
    role = _acting.get()
    if role is not None:
        return role
    return SHIM_ROLE if threading.current_thread().name.startswith(SHIM_THREADS) else None


# -- the deployment's names and ARNs, for resolving the template's intrinsics ------------------

_ARNS = {
    "AWS::DynamoDB::Table": "arn:{p}:dynamodb:{r}:{a}:table/{name}",
    "AWS::S3::Bucket": "arn:{p}:s3:::{name}",
    "AWS::Lambda::Function": "arn:{p}:lambda:{r}:{a}:function:{name}",
    "AWS::IAM::Role": "arn:{p}:iam::{a}:role/{name}",
    "AWS::Logs::LogGroup": "arn:{p}:logs:{r}:{a}:log-group:{name}:*",
    "AWS::ECS::Cluster": "arn:{p}:ecs:{r}:{a}:cluster/{name}",
    "AWS::StepFunctions::StateMachine": "arn:{p}:states:{r}:{a}:stateMachine:{name}",
    "AWS::SecretsManager::Secret": "arn:{p}:secretsmanager:{r}:{a}:secret:{name}",
    "AWS::ECS::TaskDefinition": "arn:{p}:ecs:{r}:{a}:task-definition/{name}:1",
}
# What AWS::NoValue resolves to: the item holding it is left out.
_NO_VALUE = object()
# Resources whose Ref is their ARN rather than their name.
_REF_IS_ARN = {
    "AWS::StepFunctions::StateMachine",
    "AWS::SecretsManager::Secret",
    "AWS::ECS::TaskDefinition",
}


@dataclass
class Deployment:
    """Physical names of the template's resources here: `names` by logical id (the others are
    named `<stack>-<logical id>`), the table's stream, and the parameters given (the others
    take their defaults)."""

    template: dict[str, Any]
    names: dict[str, str]
    stream_arn: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def name(self, logical: str) -> str:
        return self.names.get(logical, f"{STACK}-{logical}")

    def arn(self, logical: str) -> str:
        kind = self.template["Resources"][logical]["Type"]
        if kind not in _ARNS:
            return f"unresolved:{logical}"
        return _ARNS[kind].format(p=PARTITION, r=REGION, a=ACCOUNT, name=self.name(logical))

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Partition": PARTITION,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": STACK,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.template.get("Parameters", {}):
            return self.template["Parameters"][name].get("Default", "")
        kind = self.template["Resources"][name]["Type"]
        return self.arn(name) if kind in _REF_IS_ARN else self.name(name)

    def attribute(self, logical: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(logical)
        if attribute == "StreamArn":
            return self.stream_arn
        if attribute == "Name":
            return self.name(logical)
        return f"unresolved:{logical}.{attribute}"

    def resolve(self, value: Any, variables: dict[str, Any] | None = None) -> Any:
        if isinstance(value, list):
            resolved = [self.resolve(item, variables) for item in value]
            return [item for item in resolved if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"} and value["Ref"] == "AWS::NoValue":
            return _NO_VALUE
        if set(value) == {"Fn::If"}:
            condition, when_true, when_false = value["Fn::If"]
            return self.resolve(when_true if self.holds(condition) else when_false, variables)
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            logical, attribute = value["Fn::GetAtt"]
            return self.attribute(logical, attribute)
        if set(value) == {"Fn::Sub"}:
            text, extra = value["Fn::Sub"], {}
            if isinstance(text, list):
                text, extra = text[0], {k: self.resolve(v) for k, v in text[1].items()}
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(self._variable(m[1], extra)), text)
        if set(value) == {"Fn::Join"}:
            separator, items = value["Fn::Join"]
            return separator.join(str(i) for i in self.resolve(items))
        resolved = {key: self.resolve(item, variables) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def holds(self, condition: str) -> bool:
        """A condition of the template, with the deployment's parameters."""
        return bool(self._evaluate(self.template["Conditions"][condition]))

    def _evaluate(self, expression: Any) -> Any:
        if not isinstance(expression, dict):
            return expression
        [(function, arguments)] = expression.items()
        if function == "Condition":
            return self.holds(arguments)
        if function == "Fn::Equals":
            one, two = (self._evaluate(self.resolve(a)) for a in arguments)
            return one == two
        if function == "Fn::Not":
            return not self._evaluate(arguments[0])
        if function == "Fn::And":
            return all(self._evaluate(a) for a in arguments)
        if function == "Fn::Or":
            return any(self._evaluate(a) for a in arguments)
        return self.resolve(expression)

    def _variable(self, name: str, extra: dict[str, Any]) -> Any:
        if name in extra:
            return extra[name]
        if "." in name and not name.startswith("AWS::"):
            logical, attribute = name.split(".", 1)
            return self.attribute(logical, attribute)
        return self.ref(name)


def template_roles(template_path: Path) -> dict[str, Any]:
    """The transformed template (its code locations stood in for by S3 URIs, as packaged)."""
    template = copy.deepcopy(load_template(template_path))
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://packaged/{name}"
    return sam_transform(template, {"AWS::Region": REGION})


def role_statements(deployment: Deployment) -> dict[str, list[dict[str, Any]]]:
    """Each IAM role's policy statements, resolved for the deployment: its inline policies, and
    those of the policies (AWS::IAM::Policy) the deployment makes for it."""
    roles: dict[str, list[dict[str, Any]]] = {}
    resources = deployment.template["Resources"]
    for logical, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            policies = resource["Properties"].get("Policies", [])
            roles.setdefault(logical, []).extend(_statements(deployment, policies))
    for resource in resources.values():
        made = "Condition" not in resource or deployment.holds(resource["Condition"])
        if resource["Type"] == "AWS::IAM::Policy" and made:
            for role in resource["Properties"]["Roles"]:
                roles[role["Ref"]] += _statements(deployment, [resource["Properties"]])
    return roles


def _statements(deployment: Deployment, policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in policies:
        found = policy["PolicyDocument"]["Statement"]
        statements += deployment.resolve(found if isinstance(found, list) else [found])
    return statements


# -- evaluating a request against a role's statements ------------------------------------------


@dataclass(frozen=True)
class Check:
    """One authorization AWS makes for a call: an action on a resource, with condition keys
    (each a list of values)."""

    action: str
    resource: str
    context: dict[str, list[str]] = field(default_factory=dict)


def _matches(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _listed(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


_OPERATORS = {
    "StringEquals": lambda expected, value: value == expected,
    "StringLike": lambda expected, value: _matches(expected, value),
}


def _condition_holds(operator: str, key: str, expected: Any, context: dict[str, list[str]]):
    qualifier, _, base = operator.rpartition(":")
    if base not in _OPERATORS:
        raise AssertionError(f"the harness does not evaluate condition operator {operator}")
    test = _OPERATORS[base]
    wanted = _listed(expected)
    values = context.get(key)

    def one(value: str) -> bool:
        return any(test(e, value) for e in wanted)

    if qualifier == "ForAllValues":  # (as AWS: true for a request without the key)
        return all(one(v) for v in values or [])
    if qualifier == "ForAnyValue":
        return any(one(v) for v in values or [])
    if qualifier:
        raise AssertionError(f"the harness does not evaluate condition operator {operator}")
    return values is not None and len(values) == 1 and one(values[0])


def _statement_applies(statement: dict[str, Any], check: Check) -> bool:
    if not any(_matches(a, check.action, ignore_case=True) for a in _listed(statement["Action"])):
        return False
    if not any(_matches(r, check.resource) for r in _listed(statement.get("Resource", "*"))):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        for key, expected in keys.items():
            if not _condition_holds(operator, key, expected, check.context):
                return False
    return True


def allowed(statements: list[dict[str, Any]], check: Check) -> bool:
    """Whether the statements allow the check: an Allow applies and no Deny does."""
    applying = [s for s in statements if _statement_applies(s, check)]
    return any(s["Effect"] == "Allow" for s in applying) and not any(
        s["Effect"] == "Deny" for s in applying
    )


# -- which authorizations a call needs ---------------------------------------------------------


class UnknownCall(Exception):
    """A call the harness cannot yet say the authorizations of: add it to `checks`."""


def _scalar(value: dict[str, Any]) -> str:
    """The value of a low-level DynamoDB attribute value ({"S": "job#1"} → "job#1")."""
    [(_, inner)] = value.items()
    return str(inner)


def _query_partition(params: dict[str, Any], key: str) -> list[str]:
    """The partition key value a Query names in its key condition (`<key> = :value`)."""
    names = {v: k for k, v in params.get("ExpressionAttributeNames", {}).items()}
    for name, placeholder in re.findall(r"([#\w]+)\s*=\s*(:\w+)", params["KeyConditionExpression"]):
        if names.get(name, name) == key:
            return [_scalar(params["ExpressionAttributeValues"][placeholder])]
    return []


class Checks:
    """The authorizations AWS makes for each call of the deployment's components."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        # Each table's partition key, and each of its indexes', by the table's name here.
        self._hash_keys: dict[str, dict[str | None, str]] = {}
        for logical, resource in deployment.template["Resources"].items():
            if resource["Type"] != "AWS::DynamoDB::Table":
                continue
            table = resource["Properties"]
            self._hash_keys[deployment.name(logical)] = {None: _hash_key(table["KeySchema"])} | {
                index["IndexName"]: _hash_key(index["KeySchema"])
                for index in table.get("GlobalSecondaryIndexes", [])
            }

    def __call__(self, service: str, operation: str, params: dict[str, Any]) -> list[Check]:
        method = getattr(self, f"_{service.replace('-', '_')}", None)
        if method is None:
            raise UnknownCall(f"{service}.{operation}")
        return list(method(operation, params))

    # DynamoDB: the action is the operation; the resource the table or its index; the
    # partition keys the request names are dynamodb:LeadingKeys.
    def _dynamodb(self, operation: str, params: dict[str, Any]) -> Iterator[Check]:
        if operation in {"BatchGetItem", "BatchWriteItem"}:
            for table, request in params["RequestItems"].items():
                items = request["Keys"] if operation == "BatchGetItem" else request
                partition = self._hash_keys[table][None]
                keys = [
                    _scalar(
                        i.get("PutRequest", {}).get(
                            "Item", i.get("DeleteRequest", {}).get("Key", i)
                        )[partition]
                    )
                    for i in items
                ]
                yield Check(
                    f"dynamodb:{operation}", self._table_arn(table), {"dynamodb:LeadingKeys": keys}
                )
            return
        if operation == "TransactWriteItems":
            kinds = {
                "Put": "PutItem",
                "Update": "UpdateItem",
                "Delete": "DeleteItem",
                "ConditionCheck": "ConditionCheckItem",
            }
            for item in params["TransactItems"]:
                [(kind, request)] = item.items()
                key = request.get("Key", request.get("Item"))
                partition = self._hash_keys[request["TableName"]][None]
                yield Check(
                    f"dynamodb:{kinds[kind]}",
                    self._table_arn(request["TableName"]),
                    {"dynamodb:LeadingKeys": [_scalar(key[partition])]},
                )
            return
        index = params.get("IndexName")
        resource = self._table_arn(params["TableName"]) + (f"/index/{index}" if index else "")
        hash_keys = self._hash_keys[params["TableName"]]
        context: dict[str, list[str]] = {}
        if "Key" in params or "Item" in params:
            key = params.get("Key", params.get("Item"))
            context["dynamodb:LeadingKeys"] = [_scalar(key[hash_keys[None]])]
        elif operation == "Query":
            context["dynamodb:LeadingKeys"] = _query_partition(params, hash_keys[index])
        yield Check(f"dynamodb:{operation}", resource, context)

    def _dynamodbstreams(self, operation: str, params: dict[str, Any]) -> Iterator[Check]:
        # A shard iterator names its stream only opaquely: the deployment has one stream.
        yield Check(f"dynamodb:{operation}", params.get("StreamArn", self._deployment.stream_arn))

    _S3_ACTIONS = {
        "GetObject": "s3:GetObject",
        "HeadObject": "s3:GetObject",
        "PutObject": "s3:PutObject",
        "CreateMultipartUpload": "s3:PutObject",
        "UploadPart": "s3:PutObject",
        "CompleteMultipartUpload": "s3:PutObject",
        "AbortMultipartUpload": "s3:AbortMultipartUpload",
        "ListParts": "s3:ListMultipartUploadParts",
        "DeleteObject": "s3:DeleteObject",
        "ListObjectsV2": "s3:ListBucket",
        "ListObjects": "s3:ListBucket",
        "HeadBucket": "s3:ListBucket",
    }

    def _s3(self, operation: str, params: dict[str, Any]) -> Iterator[Check]:
        bucket = f"arn:{PARTITION}:s3:::{params['Bucket']}"
        if operation == "DeleteObjects":
            for item in params["Delete"]["Objects"]:
                yield Check("s3:DeleteObject", f"{bucket}/{item['Key']}")
            return
        if operation == "CopyObject":
            source = params["CopySource"]
            source = f"{source['Bucket']}/{source['Key']}" if isinstance(source, dict) else source
            yield Check("s3:GetObject", f"arn:{PARTITION}:s3:::{source.lstrip('/')}")
            yield Check("s3:PutObject", f"{bucket}/{params['Key']}")
            return
        if operation not in self._S3_ACTIONS:
            raise UnknownCall(f"s3.{operation}")
        yield Check(
            self._S3_ACTIONS[operation], f"{bucket}/{params['Key']}" if "Key" in params else bucket
        )

    def _lambda(self, operation: str, params: dict[str, Any]) -> Iterator[Check]:
        if operation != "Invoke":
            raise UnknownCall(f"lambda.{operation}")
        name = params["FunctionName"]
        arn = (
            name
            if name.startswith("arn:")
            else f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}"
        )
        yield Check("lambda:InvokeFunction", arn)

    def _stepfunctions(self, operation: str, params: dict[str, Any]) -> Iterator[Check]:
        resource = params.get("stateMachineArn", params.get("executionArn", "*"))
        yield Check(f"states:{operation}", resource)

    def _ecs(self, operation: str, params: dict[str, Any]) -> Iterator[Check]:
        if operation == "RunTask":
            yield Check("ecs:RunTask", params["taskDefinition"])
            return
        if operation == "UpdateTaskProtection":
            cluster = params["cluster"].rsplit("/", 1)[-1]
            for task in params["tasks"]:
                task_id = task.rsplit("/", 1)[-1]
                arn = f"arn:{PARTITION}:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{task_id}"
                yield Check("ecs:UpdateTaskProtection", arn)
            return
        yield Check(f"ecs:{operation}", "*")
        if operation != "RegisterTaskDefinition":
            return
        # Tags given on registration are a TagResource of the new revision, and the roles
        # the task will assume are passed to ECS.
        if params.get("tags"):
            revision = (
                f"arn:{PARTITION}:ecs:{REGION}:{ACCOUNT}:task-definition/{params['family']}:1"
            )
            yield Check(
                "ecs:TagResource", revision, {"ecs:CreateAction": ["RegisterTaskDefinition"]}
            )
        for role in ("taskRoleArn", "executionRoleArn"):
            if params.get(role):
                yield Check(
                    "iam:PassRole",
                    params[role],
                    {"iam:PassedToService": ["ecs-tasks.amazonaws.com"]},
                )

    def _secretsmanager(self, operation: str, params: dict[str, Any]) -> Iterator[Check]:
        yield Check(f"secretsmanager:{operation}", params["SecretId"])

    def _sts(self, operation: str, params: dict[str, Any]) -> Iterator[Check]:
        if operation != "GetCallerIdentity":  # (which needs no permission)
            raise UnknownCall(f"sts.{operation}")
        return iter(())

    def _table_arn(self, table: str) -> str:
        return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{table}"


def _hash_key(schema: list[dict[str, str]]) -> str:
    return next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")


# -- the enforcement, on botocore's events -----------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    role: str
    call: str
    check: Check | None  # None: a call the harness does not know


class Enforcement:
    """Checks each call of a client it is attached to against the acting role's statements,
    refusing as AWS does (an AccessDenied ClientError) and recording every refusal."""

    def __init__(self) -> None:
        self._roles: dict[str, list[dict[str, Any]]] = {}
        self._checks: Checks | None = None
        self.refusals: list[Refusal] = []
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def deploy(self, deployment: Deployment) -> None:
        """Enforce the roles of this deployment from now on, with no refusal recorded yet."""
        with self._lock:
            self._roles = role_statements(deployment)
            self._checks = Checks(deployment)
            self.refusals = []

    def attach(self, events: Any) -> None:
        """Check every call of clients made from an emitter (a boto3 session's events)."""
        events.register("before-parameter-build", self._check)

    def _check(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        role = acting_role()
        if role is None or self._checks is None:
            return
        service = model.service_model.service_name
        call = f"{service}.{model.name}"
        with self._lock:
            self.calls[role] = self.calls.get(role, 0) + 1
        try:
            checks = self._checks(service, model.name, params)
        except UnknownCall:
            self._refuse(Refusal(role, call, None), service, model.name)
        for check in checks:
            if not allowed(self._roles[role], check):
                self._refuse(Refusal(role, call, check), service, model.name)

    def _refuse(self, refusal: Refusal, service: str, operation: str) -> None:
        with self._lock:
            self.refusals.append(refusal)
        what = refusal.check or "an operation the test harness cannot authorize yet"
        # (S3 answers 403 AccessDenied; the JSON protocols 400 AccessDeniedException.)
        code, status = ("AccessDenied", 403) if service == "s3" else ("AccessDeniedException", 400)
        raise ClientError(
            {
                "Error": {"Code": code, "Message": f"{refusal.role} is not authorized: {what}"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            operation,
        )


@functools.cache
def enforcement_on(events: Any) -> Enforcement:
    """The one enforcement of an emitter's clients (fixtures of several test folders share it)."""
    enforcement = Enforcement()
    enforcement.attach(events)
    return enforcement
