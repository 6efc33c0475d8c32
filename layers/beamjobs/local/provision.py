"""Create the table and the bucket from template.yaml's own definitions, so that the embedded
AWS (and any endpoint without CloudFormation) is shaped exactly like a deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from beamjobs.aws import clients
from beamjobs.aws.errors import error_code
from beamjobs.settings import Settings

TABLE_RESOURCE = "JobsTable"
IDEMPOTENCY_TABLE_RESOURCE = "IdempotencyTable"
BUCKET_RESOURCE = "ArtifactsBucket"


class _TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form intrinsics (!Ref, !Sub, …) as {"Fn::…": value}."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        # `!GetAtt Resource.Attribute` is the short form of ["Resource", "Attribute"].
        return {name: value.split(".", 1) if suffix == "GetAtt" else value}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    with path.open() as file:
        return dict(yaml.load(file, Loader=_TemplateLoader))  # noqa: S506 (SafeLoader subclass)


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    """Resolve !Ref to a template parameter's default; other intrinsics are not expected in the
    resources created locally."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return parameters[value["Ref"]]
        return {k: _resolve(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, parameters) for v in value]
    return value


def _properties(template: dict[str, Any], resource: str) -> dict[str, Any]:
    defaults = {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}
    return dict(_resolve(template["Resources"][resource]["Properties"], defaults))


def create_table(
    dynamodb: Any, name: str, template: dict[str, Any], resource: str = TABLE_RESOURCE
) -> None:
    props = _properties(template, resource)
    stream = props.get("StreamSpecification")
    try:
        dynamodb.create_table(
            TableName=name,
            BillingMode=props["BillingMode"],
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            **(
                {"GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"]}
                if "GlobalSecondaryIndexes" in props
                else {}
            ),
            **({"StreamSpecification": {"StreamEnabled": True, **stream}} if stream else {}),
        )
    except dynamodb.exceptions.ResourceInUseException:
        return  # already provisioned
    dynamodb.get_waiter("table_exists").wait(TableName=name)
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def create_bucket(s3: Any, name: str, region: str, template: dict[str, Any]) -> None:
    props = _properties(template, BUCKET_RESOURCE)
    create: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**create)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        return
    except s3.exceptions.ClientError as error:
        if error_code(error) != "BucketAlreadyExists":
            raise
        return
    if "BucketEncryption" in props:
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                    for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                ]
            },
        )
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
    if rules:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={"Rules": [_lifecycle_rule(rule) for rule in rules]},
        )


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's lifecycle rule shape → the S3 API's."""
    prefix = rule.get("Prefix")
    api_rule: dict[str, Any] = {
        "ID": rule["Id"],
        "Status": rule["Status"],
        "Filter": {"Prefix": prefix} if prefix else {},
    }
    if "ExpirationInDays" in rule:
        api_rule["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        api_rule["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return api_rule


def provision(settings: Settings, template_path: Path) -> None:
    """Create the tables and the bucket named by the settings, if they do not exist yet."""

    template = load_template(template_path)
    dynamodb = clients.client("dynamodb", settings)
    create_table(dynamodb, settings.table_name, template)
    create_table(dynamodb, settings.idempotency_table_name, template, IDEMPOTENCY_TABLE_RESOURCE)
    create_bucket(clients.client("s3", settings), settings.bucket_name, settings.region, template)
