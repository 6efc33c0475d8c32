"""The AWS deployment, proven offline: template.yaml transformed by aws-sam-translator (code
packaged to S3 as `sam package` would) deploys into moto's CloudFormation; then the run-job
state machine really executes in moto's Step Functions, driven by the Run and Cancel handlers'
own executor, and the reconcile function settles what the executions leave behind.

moto gaps are bridged here and only here: its Step Functions ECS integration passes the state
machine's PascalCase parameters to boto3 unconverted (patched below, using botocore's own shapes,
as AWS does it); its CloudFormation ignores a load balancer's Type (so a network load balancer
became an application one that refuses TCP listeners; patched); its Fn::Sub reads `$$` as an
escaped `$`; the state machine CloudFormation creates lives in a backend other than the one
that executes (it is registered there again, as deployed); and its lambda:invoke echoes the payload instead of running the function (so the
state machine's Catch is checked by its input, and EventBridge's delivery of the execution's
status change is done by calling the reconcile handler with that event)."""

import ast
import copy
import io
import json
import re
import time
import tomllib
import zipfile

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto import settings as moto_settings
from moto.elbv2 import models as elbv2_models
from moto.iam.models import iam_backends
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
    StatesErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_ecs,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

from beamjobs.api import pipeline_pb2
from beamjobs.app.service import JobControl
from beamjobs.aws.artifact_store import ArtifactStore
from beamjobs.aws.blobs import S3BlobStore
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.aws.stepfunctions import StepFunctionsExecutor, execution_arn
from beamjobs.domain.engines import Engines
from beamjobs.domain.errors import FailedPrecondition
from beamjobs.domain.identity import LOCAL_CALLER
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.limits import Quotas
from beamjobs.domain.staging_tokens import digest, mint
from beamjobs.domain.states import JobState, is_terminal
from beamjobs.domain.worker_secrets import worker_secret
from beamjobs.local.invoker import LocalContext
from beamjobs.local.provision import load_template
from beamjobs.settings import Settings
from tests.faults.harness import TASK_START_FAILURES
from tests.iam_policies import sam_transform
from tests.integration.conftest import EVENTS, ROOT, TEMPLATE, pipeline_bytes
from tests.moto_gaps import bridge_ecs_casing

REGION = "us-east-1"
STACK = "beamjobs-test"
UPSTREAM = "flink=10.0.3.4:8099"
# Why ECS stops a task before it started (then with StopCode TaskFailedToStart).
NEVER_STARTED = ("CannotPullContainerError", "ResourceInitializationError")
# Who may call: no default (every principal of the account would be one).
ALLOWED = "arn:aws:iam::123456789012:role/DataEngineers"
CODE_BUCKET = "beamjobs-packaged-code"


def _load_balancer_of_its_type(
    cls, resource_name, cloudformation_json, account_id, region_name, **_
):
    properties = cloudformation_json["Properties"]
    return elbv2_models.elbv2_backends[account_id][region_name].create_load_balancer(
        resource_name,
        properties.get("SecurityGroups"),
        properties.get("Subnets"),
        scheme=properties.get("Scheme", "internet-facing"),
        loadbalancer_type=properties.get("Type", "application"),
    )


@pytest.fixture
def moto_gaps_bridged(monkeypatch):
    bridge_ecs_casing(monkeypatch.setattr)
    monkeypatch.setattr(
        elbv2_models.FakeLoadBalancer,
        "create_from_cloudformation_json",
        classmethod(_load_balancer_of_its_type),
    )


# -- the template, as `sam package` + the SAM transform would make it --------------------------


def _package(s3, template):
    """Zip each CodeUri/ContentUri folder to S3 (the state machine's definition as is) and
    point the resource at it."""
    s3.create_bucket(Bucket=CODE_BUCKET)
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if isinstance(properties.get("DefinitionUri"), str):
            body = (ROOT / properties["DefinitionUri"]).read_bytes()
            s3.put_object(Bucket=CODE_BUCKET, Key=name, Body=body)
            properties["DefinitionUri"] = f"s3://{CODE_BUCKET}/{name}"
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w") as archive:
                    for path in (ROOT / properties[key]).rglob("*.py"):
                        archive.write(path, path.relative_to(ROOT / properties[key]))
                s3.put_object(Bucket=CODE_BUCKET, Key=name, Body=buffer.getvalue())
                properties[key] = f"s3://{CODE_BUCKET}/{name}"
    return template


_CONTEXT_TOKEN = "__ASL_CONTEXT__"


def _inline_state_machine(transformed):
    """DefinitionS3Location + DefinitionSubstitutions → the same definition, inlined with
    Fn::Sub (what CloudFormation does with the substitutions). moto's Fn::Sub runs Python's
    string.Template once per variable, each pass reading `$$` as an escaped `$`: ASL's `$$.`
    context paths travel through it as a token, restored when the machine is registered."""
    definition = (ROOT / "statemachine" / "run_job.asl.json").read_text()
    definition = definition.replace("$$", _CONTEXT_TOKEN)
    for resource in transformed["Resources"].values():
        if resource["Type"] == "AWS::StepFunctions::StateMachine":
            properties = resource["Properties"]
            substitutions = properties.pop("DefinitionSubstitutions")
            properties.pop("DefinitionS3Location", None)
            properties["DefinitionString"] = {"Fn::Sub": [definition, substitutions]}
    return transformed


@pytest.fixture
def deployed(request, monkeypatch, moto_gaps_bridged):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config):
        s3 = boto3.client("s3", region_name=REGION)
        sam_template = _package(s3, copy.deepcopy(load_template(TEMPLATE)))
        transformed = _inline_state_machine(sam_transform(sam_template, {"AWS::Region": REGION}))
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
        certificate = boto3.client("acm", region_name=REGION).request_certificate(
            DomainName="jobs.example.com"
        )["CertificateArn"]
        parameters = {
            "CertificateArn": certificate,
            "VpcId": vpc["VpcId"],
            "SubnetIds": ",".join(s["SubnetId"] for s in subnets["Subnets"][:2]),
            "ShimImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/beamjobs-shim:1",
            "WorkerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/beamjobs-worker:1",
            "AllowedPrincipals": ALLOWED,
            # Beam's Flink job server on EMR, as an upstream engine.
            "UpstreamEngines": UPSTREAM,
        }
        marker = request.node.get_closest_marker("deploy_parameters")
        parameters.update(marker.kwargs if marker else {})
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        cloudformation.create_stack(
            StackName=STACK,
            TemplateBody=json.dumps(transformed),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        _register_for_execution(cloudformation)
        yield cloudformation, transformed


def _register_for_execution(cloudformation):
    """The deployed state machine (definition as substituted by CloudFormation, role), in the
    backend that runs executions."""
    from moto.stepfunctions.models import stepfunctions_backends

    resources = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    [arn] = [
        r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"] == "RunJobStateMachine"
    ]
    deployed = stepfunctions_backends["123456789012"][REGION].describe_state_machine(arn)
    boto3.client("stepfunctions", region_name=REGION).create_state_machine(
        name=deployed.name,
        definition=deployed.definition.replace(_CONTEXT_TOKEN, "$$"),
        roleArn=deployed.roleArn,
    )


def test_the_transformed_template_deploys_with_every_resource_complete(deployed):
    cloudformation, transformed = deployed
    stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    resources = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    # moto lists a resource whose Condition is false as a nameless summary: skipped.
    statuses = {
        r["LogicalResourceId"]: r["ResourceStatus"] for r in resources if r["LogicalResourceId"]
    }
    expected = {
        name
        for name, resource in transformed["Resources"].items()
        if resource.get("Condition")
        not in {"PlaintextListener", "CacheDockerHub", "HasWarmPool", "HasAlarmEmail"}
    }
    # moto makes no wait handles, no Secrets Manager secrets and no alarms from a template
    # (cfn-lint checks those).
    alarms = {
        n for n, r in transformed["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert set(statuses) == expected - {"ListenerReady", "CallerKey"} - alarms
    assert set(statuses.values()) == {"CREATE_COMPLETE"}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["JobEndpoint"].endswith(":443")


def test_by_default_the_job_api_is_internal_tls_only_and_authenticates_every_call(deployed):
    elb = boto3.client("elbv2", region_name=REGION)
    [balancer] = elb.describe_load_balancers()["LoadBalancers"]
    assert balancer["Scheme"] == "internal"
    [listener] = elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    assert (listener["Protocol"], listener["Port"]) == ("TLS", 443)
    assert listener["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    ecs = boto3.client("ecs", region_name=REGION)
    [shim] = [
        ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        for arn in ecs.list_task_definitions()["taskDefinitionArns"]
        if "-shim:" in arn
    ]
    # (moto leaves out a value it could not resolve: the secret, which it does not make.)
    env = {e["name"]: e.get("value") for e in shim["containerDefinitions"][0]["environment"]}
    assert env["BEAMJOBS_REQUIRE_AUTH"] == "true"
    assert "BEAMJOBS_CALLER_KEY_SECRET" in env  # it signs its events' callers
    assert env["BEAMJOBS_ALLOWED_PRINCIPALS"] == ALLOWED
    worker_role = _physical(boto3.client("cloudformation", region_name=REGION), "WorkerTaskRole")
    iam = boto3.client("iam", region_name=REGION)
    assert env["BEAMJOBS_WORKER_PRINCIPALS"] == iam.get_role(RoleName=worker_role)["Role"]["Arn"]
    # The host identity proofs name: the balancer's, with no EndpointHost given.
    assert env["BEAMJOBS_ADVERTISED_ENDPOINT"] == f"{balancer['DNSName']}:443"


def test_operations_have_a_dashboard_alarms_repositories_and_logs_that_expire(deployed):
    cloudformation, transformed = deployed
    resources = transformed["Resources"]
    # A dashboard, its metrics the deployment's own.
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    body = json.loads(
        cloudwatch.get_dashboard(DashboardName=_physical(cloudformation, "Dashboard"))[
            "DashboardBody"
        ]
    )
    titles = [widget["properties"]["title"] for widget in body["widgets"]]
    assert "Run-job executions" in titles and "Alarms" in titles
    assert any("workers lost" in title for title in titles)
    # Alarms on every function's errors and throttles, the shims and the run-job executions,
    # each telling the alarm topic.
    alarms = {
        n: r["Properties"]
        for n, r in resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm" and n not in {"OffersWaiting", "NoOffersWaiting"}
    }  # (the warm pool's alarms scale it)
    for function in ("Control", "Query", "Worker", "Reconcile"):
        assert {f"{function}FunctionErrors", f"{function}FunctionThrottles"} <= set(alarms)
    assert {"ShimCpuHigh", "ShimMemoryHigh", "RunJobExecutionsFailed"} <= set(alarms)
    # ... and on the reconcile function's own metrics: workers lost, tasks that never started.
    assert alarms["WorkersLost"]["MetricName"] == "WorkersLost"
    assert alarms["WorkersLost"]["Dimensions"] == [
        {"Name": "service", "Value": "beamjobs-reconcile"}
    ]
    assert "WorkerTasksNeverStarted" in alarms
    # ... on the share of jobs ending FAILED, of every end the store counts (JobsEnded, one
    # series per terminal state), and on the shims' change feed falling behind.
    math = alarms["JobsFailing"]["Metrics"]
    counted = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        for m in math
        if "MetricStat" in m and m["MetricStat"]["Metric"]["MetricName"] == "JobsEnded"
    }
    assert counted == {state.value for state in JobState if is_terminal(state)}
    assert [m["Id"] for m in math if m.get("ReturnData", True)] == ["failedpercent"]
    assert alarms["ChangeFeedLagging"]["MetricName"] == "ChangeFeedLag"
    assert {"Jobs ended, by state", "Run to RUNNING (ms)"} <= set(titles)
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())
    # The images' repositories: tags never move, pushes are scanned.
    ecr = boto3.client("ecr", region_name=REGION)
    for logical in ("ShimRepository", "WorkerRepository"):
        [repository] = ecr.describe_repositories(
            repositoryNames=[_physical(cloudformation, logical)]
        )["repositories"]
        assert repository["imageTagMutability"] == "IMMUTABLE"
        # (moto's CloudFormation leaves the scanning out: read from the template.)
        scanning = resources[logical]["Properties"]["ImageScanningConfiguration"]
        assert scanning == {"ScanOnPush": True}
    # Every function logs to a group of its own that expires.
    logs = boto3.client("logs", region_name=REGION)
    for function in ("Control", "Query", "Worker", "Reconcile"):
        group = resources[f"{function}Function"]["Properties"]["LoggingConfig"]["LogGroup"]
        [found] = logs.describe_log_groups(
            logGroupNamePrefix=_physical(cloudformation, group["Ref"])
        )["logGroups"]
        assert found["retentionInDays"] == 30
        # (moto's CloudFormation makes every function x86_64: read from the template.)
        assert resources[f"{function}Function"]["Properties"]["Architectures"] == ["arm64"]
    # The layer is built for the functions' architecture.
    [layer] = [r for r in resources.values() if r["Type"] == "AWS::Lambda::LayerVersion"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


@pytest.mark.deploy_parameters(WarmWorkers="2")
def test_with_a_warm_pool_its_service_queue_scaling_and_settings_deploy(deployed):
    cloudformation, transformed = deployed
    resources = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    statuses = {r["LogicalResourceId"]: r["ResourceStatus"] for r in resources}
    pool = [
        name for name, r in transformed["Resources"].items() if r.get("Condition") == "HasWarmPool"
    ]
    # moto's CloudFormation makes no Application Auto Scaling resources and no alarms (cfn-lint
    # checks those): every other resource of the pool is made.
    scaling = {
        "WarmPoolScalableTarget",
        "WarmPoolScaleOut",
        "WarmPoolScaleIn",
        "OffersWaiting",
        "NoOffersWaiting",
    }
    assert scaling < set(pool)
    assert {statuses[name] for name in set(pool) - scaling} == {"CREATE_COMPLETE"}
    target = transformed["Resources"]["WarmPoolScalableTarget"]["Properties"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        {"Ref": "WarmWorkers"},
        {"Ref": "WarmWorkersMax"},
    )
    for alarm, policy in (
        ("OffersWaiting", "WarmPoolScaleOut"),
        ("NoOffersWaiting", "WarmPoolScaleIn"),
    ):
        properties = transformed["Resources"][alarm]["Properties"]
        assert properties["AlarmActions"] == [{"Ref": policy}]
        assert properties["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["OffersQueue", "QueueName"]}
    ecs = boto3.client("ecs", region_name=REGION)
    cluster = _physical(cloudformation, "Cluster")
    [service] = ecs.describe_services(
        cluster=cluster, services=[_physical(cloudformation, "WarmPoolService")]
    )["services"]
    assert service["desiredCount"] == 2
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    [container] = definition["taskDefinition"]["containerDefinitions"]
    assert container["command"] == ["python", "-m", "beamjobs.worker", "--warm"]
    functions = boto3.client("lambda", region_name=REGION)

    def environment(logical):
        name = _physical(cloudformation, logical)
        return functions.get_function_configuration(FunctionName=name)["Environment"]["Variables"]

    # Jobs of the pool's size are offered to it; the worker channel hands them to its role.
    assert environment("ControlFunction")["BEAMJOBS_WARM_POOL_SIZE"] == "1024/4096"
    iam = boto3.client("iam", region_name=REGION)
    role = iam.get_role(RoleName=_physical(cloudformation, "WarmPoolTaskRole"))["Role"]["Arn"]
    assert environment("WorkerFunction")["BEAMJOBS_WARM_POOL_ROLE"] == role
    # A job's code in a pooled task may not call the Job API, as in a task of its own.
    [shim] = [
        ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        for arn in ecs.list_task_definitions()["taskDefinitionArns"]
        if "-shim:" in arn
    ]
    env = {e["name"]: e.get("value") for e in shim["containerDefinitions"][0]["environment"]}
    assert role in env["BEAMJOBS_WORKER_PRINCIPALS"].split(",")


def _outputs(cloudformation):
    stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def _control(cloudformation, outputs, worker_task_definition=None):
    jobs = DynamoJobStore(
        boto3.client("dynamodb", region_name=REGION), outputs["JobsTableName"], item_lifetime=86_400
    )
    blobs = S3BlobStore(boto3.client("s3", region_name=REGION), outputs["ArtifactsBucketName"])
    sfn = boto3.client("stepfunctions", region_name=REGION)
    # The settings the deployed control function has (the template's defaults: prism built
    # in, nothing pulled from Docker Hub unless a stack's parameters say so).
    control_env = boto3.client("lambda", region_name=REGION).get_function_configuration(
        FunctionName=_physical(cloudformation, "ControlFunction")
    )["Environment"]["Variables"]
    deployed_settings = Settings.from_env(control_env)
    executor = StepFunctionsExecutor(
        sfn,
        boto3.client("ecs", region_name=REGION),
        outputs["StateMachineArn"],
        blobs,
        bucket=outputs["ArtifactsBucketName"],
        worker_task_definition=worker_task_definition
        or _physical(cloudformation, "WorkerTaskDefinition"),
        mirror_task_definition=_physical(cloudformation, "MirrorTaskDefinition"),
        max_job_seconds=3600,
        worker_sdk_image=deployed_settings.worker_sdk_image,
        docker_hub_cache=deployed_settings.docker_hub_cache,
    )
    engines = Engines(deployed_settings.engine_choice(), executor, executor)
    control = JobControl(
        Jobs(jobs),
        blobs,
        engines,
        ArtifactStore(boto3.client("s3", region_name=REGION), outputs["ArtifactsBucketName"]),
        Quotas(),
    )
    return control, jobs, blobs, sfn


def _prepare(control, blobs, pipeline=None, options=None):
    pipeline_ref = blobs.put_content("pipelines", pipeline or pipeline_bytes())
    return control.prepare(
        LOCAL_CALLER,
        pipeline_ref=pipeline_ref,
        options=options or {},
        job_name="on-aws",
        staging_token_sha256=digest(mint()),
    )


def _wait_for(sfn, arn, statuses, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        execution = sfn.describe_execution(executionArn=arn)
        if execution["status"] in statuses:
            return execution
        assert time.monotonic() < deadline, execution["status"]
        time.sleep(0.2)


def _wait_for_state(sfn, arn, state, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        entered = [
            e["stateEnteredEventDetails"]["name"]
            for e in sfn.get_execution_history(executionArn=arn)["events"]
            if "stateEnteredEventDetails" in e
        ]
        if state in entered:
            return
        assert time.monotonic() < deadline, entered
        time.sleep(0.1)


def _status_change(execution):
    """What EventBridge delivers to the reconcile function when an execution ends."""
    event = json.loads((EVENTS / "reconcile_execution_status_change.json").read_text())
    event["detail"].update(
        {
            "executionArn": execution["executionArn"],
            "stateMachineArn": execution["stateMachineArn"],
            "name": execution["name"],
            "status": execution["status"],
            "error": execution.get("error"),
            "cause": execution.get("cause"),
        }
    )
    return event


def _reconcile(event, outputs, monkeypatch, cloudformation=None):
    """The reconcile function's handler on `event`, with the table and bucket (and, given the
    stack, the environment the template gives the deployed function)."""
    from beamjobs_functions.reconcile import app

    if cloudformation is not None:
        deployed = boto3.client("lambda", region_name=REGION).get_function_configuration(
            FunctionName=_physical(cloudformation, "ReconcileFunction")
        )
        for name, value in deployed["Environment"]["Variables"].items():
            monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("BEAMJOBS_TABLE", outputs["JobsTableName"])
    monkeypatch.setenv("BEAMJOBS_BUCKET", outputs["ArtifactsBucketName"])
    app._settings.cache_clear()
    app._executions.cache_clear()
    return app.lambda_handler(event, LocalContext(function_name="reconcile"))


def test_a_silent_worker_whose_task_runs_is_not_lost_until_its_running_lease(deployed, monkeypatch):
    # Given a job whose worker claimed it and went silent (its channel throttled) while its
    # execution, so its task, runs
    cloudformation, _ = deployed
    outputs = _outputs(cloudformation)
    control, jobs, _, sfn = _control(cloudformation, outputs)
    job_id = _prepare(control, _control(cloudformation, outputs)[2])
    control.run(LOCAL_CALLER, job_id)
    arn = execution_arn(outputs["StateMachineArn"], job_id)
    _wait_for_state(sfn, arn, "RunWorker")
    assert Jobs(jobs).running(job_id) is not None
    monkeypatch.setenv("BEAMJOBS_LEASE_SECONDS", "0.01")
    time.sleep(0.05)
    schedule = json.loads((EVENTS / "reconcile_schedule.json").read_text())
    # When the reconciler runs on its schedule: the job is not lost (Step Functions says its
    # task runs)
    assert _reconcile(schedule, outputs, monkeypatch, cloudformation) == {"settled": {}}
    assert jobs.get(job_id).state is JobState.RUNNING
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    # Then, silent past the running lease, it is lost, and its execution stopped
    monkeypatch.setenv("BEAMJOBS_RUNNING_LEASE_SECONDS", "0.02")
    assert _reconcile(schedule, outputs, monkeypatch, cloudformation) == {
        "settled": {job_id: "FAILED"}
    }
    assert _wait_for(sfn, arn, {"ABORTED", "FAILED", "SUCCEEDED"})["status"] == "ABORTED"
    assert "though its work ran" in jobs.events(job_id)[-1].messages[0].text


def test_a_worker_task_that_fails_fails_the_job_with_the_cause(deployed, monkeypatch):
    cloudformation, _ = deployed
    outputs = _outputs(cloudformation)
    control, jobs, blobs, sfn = _control(cloudformation, outputs)
    job_id = _prepare(control, blobs)
    # The worker's task cannot start: its task definition is gone.
    ecs = boto3.client("ecs", region_name=REGION)
    for arn in ecs.list_task_definitions()["taskDefinitionArns"]:
        if "-worker:" in arn:
            ecs.deregister_task_definition(taskDefinition=arn)
            ecs.delete_task_definitions(taskDefinitions=[arn])

    assert control.run(LOCAL_CALLER, job_id) == job_id
    control._engines.start(jobs.get(job_id))  # a retried Run starts nothing new
    arn = execution_arn(outputs["StateMachineArn"], job_id)
    execution = _wait_for(sfn, arn, {"FAILED", "SUCCEEDED", "ABORTED"})
    assert execution["status"] == "FAILED"
    assert "Unable to describe task definition" in execution["cause"], execution["cause"]
    assert len(sfn.list_executions(stateMachineArn=outputs["StateMachineArn"])["executions"]) == 1
    # The execution recorded itself on the job, and its Catch handed the job and the cause on.
    record = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=outputs["JobsTableName"], Key={"pk": {"S": f"job#{job_id}"}, "sk": {"S": "job"}}
    )["Item"]
    assert record["execution_arn"]["S"] == arn
    history = sfn.get_execution_history(executionArn=arn)["events"]
    settle_inputs = [
        json.loads(e["stateEnteredEventDetails"]["input"])
        for e in history
        if e.get("stateEnteredEventDetails", {}).get("name") == "SettleFailedJob"
    ]
    assert [i["job_id"] for i in settle_inputs] == [job_id]
    assert settle_inputs[0]["failure"]["Cause"]

    answer = _reconcile(_status_change(execution), outputs, monkeypatch)
    assert answer == {"settled": {job_id: "FAILED"}}
    [error] = [
        m.text
        for e in jobs.events(job_id)
        for m in e.messages
        if m.importance == "JOB_MESSAGE_ERROR"
    ]
    assert error.startswith("the worker's task failed: ")
    assert execution["cause"] in error


@pytest.fixture
def failed_starts_as_on_aws(deployed, monkeypatch):
    """Two more moto gaps, for a worker task that never started. moto's runTask.sync answers
    any stopped task as a success, where AWS fails the state with States.TaskFailed and the task
    for cause when ECS stopped it before it started (StopCode TaskFailedToStart, which moto
    never sets: a task stopped with one of those reasons stands for it here). And its
    lambda:invoke echoes the payload: here the state machine's invoke of the reconcile function
    runs its handler, with the environment the template gives it."""
    cloudformation, _ = deployed
    outputs = _outputs(cloudformation)
    service = state_task_service_ecs.StateTaskServiceEcs
    build_sync_resolver = service._build_sync_resolver

    def failing_as_aws(self, env, *args, **kwargs):
        resolve = build_sync_resolver(self, env, *args, **kwargs)

        def resolver():
            task = resolve()
            if task and str(task.get("StoppedReason", "")).startswith(NEVER_STARTED):
                task["StopCode"] = "TaskFailedToStart"
                failed = StatesErrorNameType.StatesTaskFailed
                raise FailureEventException(
                    FailureEvent(
                        env=env,
                        error_name=StatesErrorName(typ=failed),
                        event_type=HistoryEventType.TaskFailed,
                        event_details=EventDetails(
                            taskFailedEventDetails=TaskFailedEventDetails(
                                error=failed.to_name(), cause=json.dumps(task)
                            )
                        ),
                    )
                )
            return task

        return resolver

    def invoke(parameters, region, state_credentials):
        payload = json.loads(parameters["Payload"])
        answer = _reconcile(payload, outputs, monkeypatch, cloudformation)
        return {"StatusCode": 200, "Payload": answer}

    monkeypatch.setattr(service, "_build_sync_resolver", failing_as_aws)
    monkeypatch.setattr(lambda_eval_utils, "_invoke_lambda_function", invoke)
    return outputs


def _worker_tasks(ecs):
    return [
        task
        for cluster in ecs.list_clusters()["clusterArns"]
        for arn in [ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING")["taskArns"]]
        if arn
        for task in ecs.describe_tasks(cluster=cluster, tasks=arn)["tasks"]
    ]


def test_a_worker_task_that_never_started_is_started_again_within_the_start_lease(
    deployed, failed_starts_as_on_aws
):
    cloudformation, _ = deployed
    outputs = failed_starts_as_on_aws
    control, jobs, blobs, sfn = _control(cloudformation, outputs)
    job_id = _prepare(control, blobs)
    control.run(LOCAL_CALLER, job_id)
    arn = execution_arn(outputs["StateMachineArn"], job_id)
    ecs = boto3.client("ecs", region_name=REGION)
    # Given its worker's task, stopped by ECS before it started: Docker Hub refused the pull
    _wait_for_state(sfn, arn, "RunWorker")
    deadline = time.monotonic() + 30
    while not (tasks := _worker_tasks(ecs)):
        assert time.monotonic() < deadline, "no worker task"
        time.sleep(0.1)
    [first] = tasks
    ecs.stop_task(
        cluster=first["clusterArn"],
        task=first["taskArn"],
        reason=TASK_START_FAILURES["CannotPullContainer"],
    )
    # Then the state machine asks the reconcile function, waits, and starts a task again
    _wait_for_state(sfn, arn, "WaitToStartAgain")
    assert jobs.get(job_id).state is JobState.STARTING
    [warning] = [m.text for e in jobs.events(job_id) for m in e.messages]
    assert warning.startswith("the worker's task did not start (CannotPullContainerError")
    deadline = time.monotonic() + 30
    while not (again := [t for t in _worker_tasks(ecs) if t["taskArn"] != first["taskArn"]]):
        assert time.monotonic() < deadline, "the task was not started again"
        time.sleep(0.2)
    assert again[0]["taskDefinitionArn"] == first["taskDefinitionArn"]
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    assert jobs.get(job_id).state is JobState.STARTING


def test_a_cancelled_job_stops_its_execution_and_ends_cancelled(deployed, monkeypatch):
    cloudformation, _ = deployed
    outputs = _outputs(cloudformation)
    control, jobs, blobs, sfn = _control(cloudformation, outputs)
    job_id = _prepare(control, blobs)
    control.run(LOCAL_CALLER, job_id)
    arn = execution_arn(outputs["StateMachineArn"], job_id)
    _wait_for_state(sfn, arn, "RunWorker")  # the worker's task is under way
    input_ = json.loads(sfn.describe_execution(executionArn=arn)["input"])
    # The job's own limit (a day, by default) is capped by the deployment's maximum.
    assert input_["job_id"] == job_id and input_["timeout_seconds"] == 3600
    assert input_["overrides"]["ContainerOverrides"][0]["Command"][-1] == job_id

    assert control.cancel(LOCAL_CALLER, job_id) is JobState.CANCELLING
    execution = _wait_for(sfn, arn, {"ABORTED", "FAILED", "SUCCEEDED"})
    assert execution["status"] == "ABORTED"
    assert _reconcile(_status_change(execution), outputs, monkeypatch) == {
        "settled": {job_id: "CANCELLED"}
    }
    assert jobs.get(job_id).state is JobState.CANCELLED


def test_a_cancel_racing_the_run_that_starts_the_execution_answers_the_jobs_state(deployed):
    cloudformation, _ = deployed
    outputs = _outputs(cloudformation)
    control, jobs, blobs, sfn = _control(cloudformation, outputs)
    job_id = _prepare(control, blobs)
    # Given a Run that marked the job STARTING and has not started its execution yet
    Jobs(jobs).start(job_id)
    # When a Cancel comes in between, it answers the job's state (nothing to stop yet)
    assert control.cancel(LOCAL_CALLER, job_id) is JobState.CANCELLING
    # And the Run's execution, started after it, is the job's only one
    control._engines.start(jobs.get(job_id))
    arn = execution_arn(outputs["StateMachineArn"], job_id)
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    assert jobs.get(job_id).state is JobState.CANCELLING


def test_samconfig_names_the_default_dev_and_prod_environments():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert {"default", "dev", "prod"} <= set(config)
    for environment in ("default", "dev", "prod"):
        deploy = config[environment]["deploy"]["parameters"]
        assert "CAPABILITY_IAM" in deploy["capabilities"] and deploy["resolve_s3"]
        # Every override is a parameter of the template, within its bounds.
        declared = load_template(TEMPLATE)["Parameters"]
        for override in deploy["parameter_overrides"].split():
            name, value = override.split("=", 1)
            assert name in declared, override
            assert value in map(str, declared[name].get("AllowedValues", [value])), override
            low, high = declared[name].get("MinValue"), declared[name].get("MaxValue")
            if low is not None or high is not None:
                assert (low or 0) <= int(value) <= (high or int(value)), override


def _docker_pipeline(image: str) -> bytes:
    """A pipeline whose environment is DOCKER, of `image`."""
    pipeline = pipeline_pb2.Pipeline.FromString(pipeline_bytes())
    pipeline.components.environments["py"].urn = "beam:env:docker:v1"
    pipeline.components.environments["py"].payload = pipeline_pb2.DockerPayload(
        container_image=image
    ).SerializeToString()
    return pipeline.SerializeToString()


# A Docker Hub credential for the pull-through cache (moto keeps the parameter as given).
DOCKER_HUB_CREDENTIAL = (
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/hub-AbCdEf"
)
DOCKER_HUB_CACHE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/docker-hub"


def _execution_input(sfn, outputs, job_id):
    arn = execution_arn(outputs["StateMachineArn"], job_id)
    return json.loads(sfn.describe_execution(executionArn=arn)["input"])


def test_the_workers_own_sdk_image_runs_in_the_worker_with_no_sidecar(deployed):
    cloudformation, transformed = deployed
    outputs = _outputs(cloudformation)
    control, _, blobs, sfn = _control(cloudformation, outputs)
    own = transformed["Parameters"]["WorkerSdkImage"]["Default"]
    # (The image worker/Dockerfile builds the worker FROM, with its default BEAM_VERSION.)
    dockerfile = (ROOT / "worker" / "Dockerfile").read_text()
    beam = re.search(r"^ARG BEAM_VERSION=(\S+)$", dockerfile, re.M)[1]
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in dockerfile
    assert own == f"apache/beam_python3.11_sdk:{beam}"
    job_id = _prepare(control, blobs, _docker_pipeline(f"docker.io/{own}"))
    control.run(LOCAL_CALLER, job_id)
    given = _execution_input(sfn, outputs, job_id)
    assert given["task_definition"] == _physical(cloudformation, "WorkerTaskDefinition")
    environment = given["overrides"]["ContainerOverrides"][0]["Environment"]
    assert not [e for e in environment if e["Name"] == "BEAMJOBS_WORKER_POOL"]


def test_by_default_nothing_is_pulled_from_docker_hub(deployed):
    cloudformation, _ = deployed
    outputs = _outputs(cloudformation)
    control, jobs, blobs, sfn = _control(cloudformation, outputs)
    job_id = _prepare(control, blobs, _docker_pipeline("apache/beam_python3.11_sdk:2.50.0"))
    with pytest.raises(FailedPrecondition, match="pulls nothing from Docker Hub"):
        control.run(LOCAL_CALLER, job_id)
    assert jobs.get(job_id).state is JobState.FAILED
    assert sfn.list_executions(stateMachineArn=outputs["StateMachineArn"])["executions"] == []


@pytest.mark.deploy_parameters(DockerHubCredentialArn=DOCKER_HUB_CREDENTIAL)
def test_another_sdk_image_runs_beside_the_worker_pulled_through_the_cache(deployed):
    cloudformation, transformed = deployed
    outputs = _outputs(cloudformation)
    control, jobs, blobs, sfn = _control(cloudformation, outputs)
    image = "apache/beam_python3.11_sdk:2.50.0"
    first, second = (_prepare(control, blobs, _docker_pipeline(image)) for _ in range(2))
    control.run(LOCAL_CALLER, first)
    control.run(LOCAL_CALLER, second)
    inputs = [_execution_input(sfn, outputs, job_id) for job_id in (first, second)]
    # One revision for the image, shared by both jobs, with the SDK as a worker-pool sidecar
    # pulled through the cache.
    assert inputs[0]["task_definition"] == inputs[1]["task_definition"]
    ecs = boto3.client("ecs", region_name=REGION)
    revision = ecs.describe_task_definition(taskDefinition=inputs[0]["task_definition"])
    containers = {c["name"]: c for c in revision["taskDefinition"]["containerDefinitions"]}
    assert containers["sdk"]["image"] == f"{DOCKER_HUB_CACHE}/{image}"
    assert containers["sdk"]["command"] == ["--worker_pool"]
    environment = inputs[0]["overrides"]["ContainerOverrides"][0]["Environment"]
    assert {"Name": "BEAMJOBS_WORKER_POOL", "Value": "localhost:50000"} in environment
    # The task execution role may pull (and import) the cache's images, and only those.
    role = boto3.client("iam", region_name=REGION).get_role_policy(
        RoleName=_physical(cloudformation, "TaskExecutionRole"), PolicyName="pull-images-and-log"
    )["PolicyDocument"]
    # (moto keeps a template's inline policy as the repr of a Python dict.)
    role = ast.literal_eval(role) if isinstance(role, str) else role
    [cached] = [
        statement
        for statement in role["Statement"]
        if "ecr:BatchImportUpstreamImage" in statement["Action"]
    ]
    assert cached["Resource"].endswith(":repository/docker-hub/*")
    assert transformed["Resources"]["DockerHubCache"]["Properties"]["UpstreamRegistry"] == (
        "docker-hub"
    )
    # The state machine runs the job's task from that revision.
    _wait_for_state(sfn, execution_arn(outputs["StateMachineArn"], first), "RunWorker")
    deadline = time.monotonic() + 30
    while True:
        clusters = ecs.list_clusters()["clusterArns"]
        tasks = [t for c in clusters for t in ecs.list_tasks(cluster=c)["taskArns"]]
        described = [
            t["taskDefinitionArn"]
            for c in clusters
            for t in (ecs.describe_tasks(cluster=c, tasks=tasks)["tasks"] if tasks else [])
        ]
        if inputs[0]["task_definition"] in described:
            break
        assert time.monotonic() < deadline, described
        time.sleep(0.1)


@pytest.mark.deploy_parameters(DockerHubCredentialArn=DOCKER_HUB_CREDENTIAL)
def test_a_cold_start_reuses_the_sdk_images_revision_and_a_new_worker_image_adds_one(deployed):
    # Given a job with an SDK image, run by one function instance
    cloudformation, _ = deployed
    outputs = _outputs(cloudformation)
    image = "apache/beam_python3.11_sdk:2.50.0"
    ecs = boto3.client("ecs", region_name=REGION)

    def task_definition_of_a_job_run_by_a_fresh_instance(worker=None) -> str:
        control, _, blobs, sfn = _control(cloudformation, outputs, worker)
        job_id = _prepare(control, blobs, _docker_pipeline(image))
        control.run(LOCAL_CALLER, job_id)
        arn = execution_arn(outputs["StateMachineArn"], job_id)
        return json.loads(sfn.describe_execution(executionArn=arn)["input"])["task_definition"]

    first = task_definition_of_a_job_run_by_a_fresh_instance()
    family = ecs.describe_task_definition(taskDefinition=first)["taskDefinition"]["family"]
    assert family.startswith(f"{STACK}-worker-sdk-")

    # When other instances (cold starts) run jobs with that image, then they register nothing
    assert task_definition_of_a_job_run_by_a_fresh_instance() == first
    assert task_definition_of_a_job_run_by_a_fresh_instance() == first
    assert len(ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]) == 1

    # ... and once the worker's task definition changes (a deploy of a new worker image gives
    # the functions its new revision), the image's family gets one revision made from it
    worker = _physical(cloudformation, "WorkerTaskDefinition")
    described = ecs.describe_task_definition(taskDefinition=worker)["taskDefinition"]
    accepted = ecs.meta.service_model.operation_model("RegisterTaskDefinition").input_shape.members
    request = {key: value for key, value in described.items() if key in accepted}
    request["containerDefinitions"][0]["image"] = (
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/beamjobs-worker:2"
    )
    redeployed = ecs.register_task_definition(**request)["taskDefinition"]["taskDefinitionArn"]
    second = task_definition_of_a_job_run_by_a_fresh_instance(redeployed)
    assert second != first
    revision = ecs.describe_task_definition(taskDefinition=second)["taskDefinition"]
    assert revision["family"] == family
    worker_container = next(c for c in revision["containerDefinitions"] if c["name"] == "worker")
    assert worker_container["image"].endswith("beamjobs-worker:2")


def test_a_job_on_an_upstream_engine_runs_its_mirror_where_it_reaches_the_engine(deployed):
    # Given a deployment with an upstream engine, and a job that chooses it
    cloudformation, _ = deployed
    outputs = _outputs(cloudformation)
    control, jobs, blobs, sfn = _control(cloudformation, outputs)
    job_id = _prepare(control, blobs, options={"beam:option:beamjobs_engine:v1": "flink"})
    assert jobs.get(job_id).engine == "flink"

    # When it is run
    control.run(LOCAL_CALLER, job_id)

    # Then its execution runs the mirror's task (not a worker), following the job on the engine
    arn = execution_arn(outputs["StateMachineArn"], job_id)
    _wait_for_state(sfn, arn, "RunMirror")
    input_ = json.loads(sfn.describe_execution(executionArn=arn)["input"])
    mirror_task = _physical(cloudformation, "MirrorTaskDefinition")
    assert input_["mirror"] is True and input_["task_definition"] == mirror_task
    [override] = input_["overrides"]["ContainerOverrides"]
    assert override["Name"] == "mirror" and override["Command"] == ["mirror", job_id]
    environment = {e["Name"]: e["Value"] for e in override["Environment"]}
    assert environment["BEAMJOBS_UPSTREAM_ENDPOINT"] == "10.0.3.4:8099"
    assert override["EnvironmentFiles"] == [_secret_file(outputs, job_id)]
    # ... in the mirrors' security group, which may reach AWS's APIs and, with upstream engines
    # configured, their ports (as written: moto's CloudFormation applies no egress rules)
    cloudformation_, transformed = deployed
    group = transformed["Resources"]["MirrorSecurityGroup"]["Properties"]
    https, upstream_rule = group["SecurityGroupEgress"]
    assert (https["FromPort"], https["ToPort"]) == (443, 443)
    assert upstream_rule["Fn::If"][0] == "HasUpstreamEngines"
    assert upstream_rule["Fn::If"][1]["CidrIp"] == {"Ref": "UpstreamEnginesCidr"}
    assert "SecurityGroupIngress" not in group
    [task] = _tasks_of(mirror_task)
    assert task["overrides"]["containerOverrides"][0]["name"] == "mirror"
    _assert_secret_nowhere(blobs, job_id, input_, task["overrides"], _items_of(outputs, job_id))
    # ... and every function knows the deployment's engines (DescribePipelineOptions, Prepare)
    lambdas = boto3.client("lambda", region_name=REGION)
    control_env = lambdas.get_function_configuration(
        FunctionName=_physical(cloudformation, "ControlFunction")
    )["Environment"]["Variables"]
    assert control_env["BEAMJOBS_UPSTREAM_ENGINES"] == UPSTREAM
    assert control_env["BEAMJOBS_MIRROR_TASK_DEFINITION"] == mirror_task


def test_a_streaming_job_runs_on_prism_in_its_own_workers_task(deployed):
    # Given a deployment as the template makes it by default, and a streaming pipeline that
    # chooses no engine
    cloudformation, _ = deployed
    outputs = _outputs(cloudformation)
    control, jobs, blobs, sfn = _control(cloudformation, outputs)
    job_id = _prepare(
        control, blobs, pipeline_bytes(bounded=False), {"beam:option:worker_vcpu:v1": "2"}
    )
    assert jobs.get(job_id).engine == "prism"

    # When it is run
    control.run(LOCAL_CALLER, job_id)

    # Then its mirror runs in the worker's task (sized as the job asked), not the mirror's
    arn = execution_arn(outputs["StateMachineArn"], job_id)
    _wait_for_state(sfn, arn, "RunMirror")
    input_ = json.loads(sfn.describe_execution(executionArn=arn)["input"])
    worker_task = _physical(cloudformation, "WorkerTaskDefinition")
    assert input_["mirror"] is True and input_["task_definition"] == worker_task
    assert input_["overrides"]["Cpu"] == "2048"
    [override] = input_["overrides"]["ContainerOverrides"]
    assert override["Name"] == "worker"
    assert override["Command"] == ["python", "-m", "beamjobs.upstream.mirror", job_id]
    environment = {e["Name"]: e["Value"] for e in override["Environment"]}
    assert environment == {"BEAMJOBS_UPSTREAM_ENGINE": "prism"}
    # ... its worker secret read by ECS from the job's environment file, and found nowhere
    # in the execution's input, the task's overrides or the job's items
    assert override["EnvironmentFiles"] == [_secret_file(outputs, job_id)]
    [task] = _tasks_of(worker_task)
    _assert_secret_nowhere(blobs, job_id, input_, task["overrides"], _items_of(outputs, job_id))
    # ... whose container names the image's Prism and Beam's boot, and its channel
    ecs = boto3.client("ecs", region_name=REGION)
    [container] = ecs.describe_task_definition(taskDefinition=worker_task)["taskDefinition"][
        "containerDefinitions"
    ]
    settings = Settings.from_env(
        {e["name"]: e["value"] for e in container["environment"]}, worker=True
    )
    assert (settings.prism, settings.python_boot) == (
        "/opt/beamjobs/prism",
        "/opt/apache/beam/boot",
    )
    [task] = _tasks_of(worker_task)
    assert task["overrides"]["containerOverrides"][0]["command"][-1] == job_id


def _secret_file(outputs, job_id):
    key = f"arn:aws:s3:::{outputs['ArtifactsBucketName']}/secrets/{job_id}.env"
    return {"Type": "s3", "Value": key}


def _items_of(outputs, job_id):
    """Every item of the job in the table, as stored."""
    return boto3.client("dynamodb", region_name=REGION).query(
        TableName=outputs["JobsTableName"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"job#{job_id}"}},
    )["Items"]


def _assert_secret_nowhere(blobs, job_id, *places):
    secret = worker_secret(blobs, job_id)
    assert len(secret) >= 40
    for place in places:
        assert secret not in json.dumps(place, default=str)


def _tasks_of(task_definition, timeout=30):
    """The ECS tasks run from `task_definition`, once there are any."""
    ecs = boto3.client("ecs", region_name=REGION)
    deadline = time.monotonic() + timeout
    while True:
        clusters = ecs.list_clusters()["clusterArns"]
        tasks = [
            task
            for cluster in clusters
            for arns in [ecs.list_tasks(cluster=cluster)["taskArns"]]
            if arns
            for task in ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
            if task["taskDefinitionArn"] == task_definition
        ]
        if tasks:
            return tasks
        assert time.monotonic() < deadline, "no task ran"
        time.sleep(0.1)


def test_no_deploy_runs_more_shims_than_a_stream_shard_has_readers():
    # DynamoDB Streams serves at most two readers per shard, and every shim is one.
    template = load_template(TEMPLATE)
    count = template["Parameters"]["ShimCount"]
    deployment = template["Resources"]["ShimService"]["Properties"]["DeploymentConfiguration"]
    for shims in range(count["MinValue"], count["MaxValue"] + 1):
        one = shims == 1  # the OneShim condition

        def resolve(value, one=one):
            condition, when_true, when_false = value["Fn::If"]
            assert condition == "OneShim"
            return when_true if one else when_false

        most = shims * resolve(deployment["MaximumPercent"]) // 100
        least = -(-shims * resolve(deployment["MinimumHealthyPercent"]) // 100)
        assert most <= 2, shims
        assert most > least, shims  # a deploy can make progress


def _physical(cloudformation, logical):
    [physical] = [
        r["PhysicalResourceId"]
        for r in cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
        if r["LogicalResourceId"] == logical
    ]
    return physical


def test_the_credentials_of_a_jobs_code_reach_no_table_and_no_bucket(deployed, monkeypatch):
    """User code runs with the worker task's role: as moto's IAM evaluates it, that role is
    refused every read and write of the table and the bucket (which hold every other job)."""
    cloudformation, transformed = deployed
    outputs = _outputs(cloudformation)
    code = _as_role(cloudformation, "WorkerTaskRole")
    table, bucket = outputs["JobsTableName"], outputs["ArtifactsBucketName"]
    key = {"pk": {"S": "job#another"}, "sk": {"S": "job"}}
    attempts = {
        "GetItem": lambda db: db.get_item(TableName=table, Key=key),
        "PutItem": lambda db: db.put_item(TableName=table, Item=key),
        "Query": lambda db: db.query(
            TableName=table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "job#another"}},
        ),
        "GetObject": lambda s3: s3.get_object(Bucket=bucket, Key="pipelines/x"),
        "PutObject": lambda s3: s3.put_object(Bucket=bucket, Key="pipelines/x", Body=b"code"),
    }
    # What the role does allow: invoking the worker channel, nothing else.
    [policy] = transformed["Resources"]["WorkerTaskRole"]["Properties"]["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": {"Fn::GetAtt": ["WorkerFunction", "Arn"]},
        }
    ]
    # From here on moto authorizes every call by IAM policy, as AWS does.
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    refused = {}
    for name, attempt in attempts.items():
        client = code.client("s3" if "Object" in name else "dynamodb")
        with pytest.raises(ClientError) as error:
            attempt(client)
        refused[name] = (
            error.value.response["ResponseMetadata"]["HTTPStatusCode"],
            str(error.value),
        )
    assert all(
        status == 403 and ("AccessDenied" in message or "Access Denied" in message)
        for status, message in refused.values()
    ), refused


def test_every_function_has_its_own_concurrency_and_the_shim_sees_client_addresses(deployed):
    cloudformation, transformed = deployed
    aws_lambda = boto3.client("lambda", region_name=REGION)
    reserved = {
        name: aws_lambda.get_function_concurrency(FunctionName=_physical(cloudformation, name)).get(
            "ReservedConcurrentExecutions"
        )
        for name in ("ControlFunction", "QueryFunction", "WorkerFunction", "ReconcileFunction")
    }
    assert reserved == {
        "ControlFunction": 50,
        "QueryFunction": 50,
        "WorkerFunction": 20,  # workers run their users' code: low
        "ReconcileFunction": 2,
    }
    # moto's CloudFormation sets no target group attributes: read from the template.
    attributes = transformed["Resources"]["ShimTargetGroup"]["Properties"]["TargetGroupAttributes"]
    assert {a["Key"]: a["Value"] for a in attributes}["preserve_client_ip.enabled"] == "true"


def _as_role(cloudformation, logical_id):
    """A session with the credentials of the stack's role `logical_id`, whose inline policies
    moto's IAM evaluates once INITIAL_NO_AUTH_ACTION_COUNT is 0."""
    role = boto3.client("iam", region_name=REGION).get_role(
        RoleName=_physical(cloudformation, logical_id)
    )["Role"]
    # moto's CloudFormation keeps a role's inline policies as parsed documents, which its own
    # IAM evaluation reads only as the JSON the IAM API stores: stored as the API would.
    backend = iam_backends[role["Arn"].split(":")[4]]["aws"].get_role(role["RoleName"])
    backend.policies = {
        name: document if isinstance(document, str) else json.dumps(document)
        for name, document in backend.policies.items()
    }
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=role["Arn"], RoleSessionName=logical_id
    )["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )


# What each role may do in the bucket, by key: (action, key) → allowed.
BUCKET_REACH = {
    "ShimTaskRole": {
        ("get", "pipelines/p"): True,
        ("put", "pipelines/p"): True,
        ("delete", "artifacts/incoming/u"): True,
        ("get", "secrets/job.env"): False,
        ("put", "secrets/job.env"): False,
        ("delete", "pipelines/p"): False,
        ("delete", "artifacts/sha256/a"): False,
    },
    "ControlFunctionRole": {
        ("get", "pipelines/p"): True,
        ("put", "secrets/job.env"): True,
        ("get", "secrets/job.env"): False,
        ("delete", "pipelines/p"): False,
        ("put", "pipelines/p"): False,
    },
    "QueryFunctionRole": {
        ("get", "pipelines/p"): True,
        ("get", "metrics/job"): True,
        ("get", "secrets/job.env"): False,
        ("put", "pipelines/p"): False,
    },
    "WorkerFunctionRole": {
        ("get", "pipelines/p"): True,
        ("put", "metrics/job"): True,
        ("delete", "secrets/job.env"): True,
        ("get", "secrets/job.env"): False,
        ("put", "pipelines/p"): False,
        ("delete", "pipelines/p"): False,
    },
}


@pytest.mark.parametrize("role", list(BUCKET_REACH))
def test_each_role_reaches_only_its_own_prefixes_of_the_bucket(deployed, monkeypatch, role):
    cloudformation, _ = deployed
    bucket = _outputs(cloudformation)["ArtifactsBucketName"]
    admin = boto3.client("s3", region_name=REGION)
    for _, key in BUCKET_REACH[role]:
        admin.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3 = _as_role(cloudformation, role).client("s3")
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    calls = {
        "get": lambda key: s3.get_object(Bucket=bucket, Key=key),
        "put": lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"y"),
        "delete": lambda key: s3.delete_object(Bucket=bucket, Key=key),
    }
    reach = {}
    for action, key in BUCKET_REACH[role]:
        try:
            calls[action](key)
            reach[action, key] = True
        except ClientError as error:
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403, error
            reach[action, key] = False
    assert reach == BUCKET_REACH[role]


def test_tasks_pull_images_only_from_the_projects_repositories_and_workers_reach_only_https(
    deployed,
):
    cloudformation, transformed = deployed
    # (moto's CloudFormation keeps a group's default egress: read from the template.)
    worker = transformed["Resources"]["WorkerSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in worker
    assert [
        (r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in worker["SecurityGroupEgress"]
    ] == [("tcp", 443, 443)]
    role = _physical(cloudformation, "TaskExecutionRole")
    # (moto's CloudFormation keeps a role's inline policies as parsed documents, with a None
    # where AWS::NoValue left nothing: by default, the Docker Hub cache's statement.)
    [statements] = iam_backends["123456789012"]["aws"].get_role(role).policies.values()
    [pull] = [s for s in statements["Statement"] if s and "ecr:BatchGetImage" in s["Action"]]
    assert None in statements["Statement"]
    assert pull["Resource"] == f"arn:aws:ecr:{REGION}:123456789012:repository/beamjobs-*"
