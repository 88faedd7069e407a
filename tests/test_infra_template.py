"""The CloudFormation template: least privilege, lint, documented checkov skips, one source for the rules."""

from __future__ import annotations

import pytest

from infra.deploy import SET_BY_DEPLOY
from infra.rules import approval_rule_pattern, manifest_rule_pattern, pipeline_parameter_mapping
from infra.template import TEMPLATE_PATH, load_template
from livetrain.config import Config
from pipelines.contract import PARAMETER_NAMES
from processing.batch_contract import BATCHES_PREFIX, MANIFEST_FILE

# Actions that IAM cannot scope to a resource (the Service Authorization Reference lists no resource type for
# them), so their statements need Resource "*". Anything else with "*" fails the test.
UNSCOPABLE_ACTIONS = {
    "ecr:GetAuthorizationToken",  # a registry login token, tied to no repository
    "cloudwatch:PutMetricData",  # metrics have no ARN; the template narrows it with a cloudwatch:namespace condition
    "sagemaker:ListModelPackages",  # a list call; FindChampion filters by group and describes only the group's
}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def resources(template: dict):
    """(logical id, resource) for every resource, those an Fn::ForEach makes as its fragment declares them."""
    for name, resource in template["Resources"].items():
        if name.startswith("Fn::ForEach::"):
            yield from resource[2].items()
        else:
            yield name, resource


def policy_documents(template: dict):
    """(where, document) for every IAM policy in the template: identity, trust and resource policies."""
    for name, resource in resources(template):
        properties = resource.get("Properties", {})
        for key in ("PolicyDocument", "AssumeRolePolicyDocument"):
            if key in properties:
                yield f"{name}.{key}", properties[key]
        for policy in properties.get("Policies", []):
            yield f"{name}.{policy['PolicyName']}", policy["PolicyDocument"]


def privilege_problems(where: str, document: dict) -> list[str]:
    """Allow statements that grant wildcard actions, NotAction/NotResource, any principal, or "*" resources
    for scopable actions. Deny statements may be broad: a broad deny narrows access."""
    problems = []
    for statement in as_list(document["Statement"]):
        if statement["Effect"] != "Allow":
            continue
        actions = as_list(statement.get("Action", []))
        problems += [f"{where}: {key} in an Allow" for key in ("NotAction", "NotResource") if key in statement]
        problems += [f"{where}: wildcard action {action}" for action in actions if "*" in action]
        if statement.get("Principal") == "*" or "*" in as_list((statement.get("Principal") or {}).get("AWS", [])):
            problems.append(f"{where}: Allow to any principal")
        if "*" in as_list(statement.get("Resource", [])):
            problems += [f"{where}: {action} on Resource *" for action in actions if action not in UNSCOPABLE_ACTIONS]
    return problems


def test_every_iam_statement_names_its_actions_and_scopes_its_resources():
    documents = list(policy_documents(load_template()))

    assert len(documents) >= 15  # every role's trust and inline policies, three resource policies
    assert [problem for where, document in documents for problem in privilege_problems(where, document)] == []


@pytest.mark.parametrize(("statement", "problem"), [
    ({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b"}, "wildcard action *"),
    ({"Effect": "Allow", "Action": ["s3:*"], "Resource": "arn:aws:s3:::b"}, "wildcard action s3:*"),
    ({"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b"}, "wildcard action s3:Get*"),
    ({"Effect": "Allow", "Action": "sagemaker:CreateModel", "Resource": "*"}, "sagemaker:CreateModel on Resource *"),
    ({"Effect": "Allow", "NotAction": "iam:PassRole", "Resource": "arn:aws:s3:::b"}, "NotAction in an Allow"),
    ({"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Resource": "arn:q"}, "any principal"),
])
def test_the_privilege_check_catches_broad_grants(statement, problem):
    problems = privilege_problems("T", {"Statement": [statement]})

    assert len(problems) == 1 and problem in problems[0]


def test_unscopable_actions_pass_and_deny_statements_may_be_broad():
    document = {"Statement": [
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"},
    ]}

    assert privilege_problems("T", document) == []


def test_every_checkov_skip_gives_its_reason_in_the_template():
    skips = [(name, skip) for name, resource in resources(load_template())
             for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])]

    assert skips, "the template documents its checkov skips"
    assert [(name, skip["id"]) for name, skip in skips if len(skip.get("comment", "").split()) < 6] == []


def test_the_streamer_runs_in_private_subnets_without_a_public_ip():
    network = load_template()["Resources"]["StreamerService"]["Properties"]["NetworkConfiguration"]

    assert network["AwsvpcConfiguration"] == {"AssignPublicIp": "DISABLED", "Subnets": {"Ref": "StreamerSubnetIds"},
                                              "SecurityGroups": {"Ref": "StreamerSecurityGroupIds"}}


def test_the_rules_come_from_the_template():
    assert manifest_rule_pattern("b", "CS.D.X.IP")["detail"] == {
        "bucket": {"name": ["b"]}, "object": {"key": [{"wildcard": "batches/CS.D.X.IP/*.manifest"}]}}
    assert approval_rule_pattern("g")["detail"] == {"ModelPackageGroupName": [{"prefix": "g-"}],
                                                    "ModelApprovalStatus": ["Approved"]}
    assert pipeline_parameter_mapping("CS.D.X.IP") == {"InputBucket": "$.detail.bucket.name",
                                                       "InputManifestKey": "$.detail.object.key",
                                                       "Epic": "CS.D.X.IP"}  # a constant: no JSON path


def test_one_manifest_rule_and_rollback_alarms_per_epic_of_the_epics_parameter():
    template = load_template()
    identifier, collection, fragment = template["Resources"]["Fn::ForEach::EachEpic"]

    assert template["Transform"] == "AWS::LanguageExtensions"
    assert collection == {"Ref": "Epics"} and template["Parameters"]["Epics"]["Type"] == "CommaDelimitedList"
    assert template["Parameters"]["Epics"]["Default"] == Config.epic
    # &{}: the epic's dots left out of the logical ids
    assert sorted(fragment) == [f"{name}&{{{identifier}}}" for name in
                                ("EndpointInvocationErrorsAlarm", "EndpointLatencyAlarm", "ManifestRule")]
    rule = fragment[f"ManifestRule&{{{identifier}}}"]
    # named after the epic, so that the dead-letter queue's policy can allow them all by one ARN pattern
    assert rule["Properties"]["Name"] == {"Fn::Sub": f"${{PipelineName}}-batch-landed-${{{identifier}}}"}
    assert any(source.endswith(":rule/${PipelineName}-batch-landed-*") for source in dead_letter_sources(template))
    # the streamer follows them all (`livetrain stream --epic A,B`)
    container, = template["Resources"]["StreamerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert {"Name": "LIVETRAIN_EPIC", "Value": {"Fn::Join": [",", {"Ref": "Epics"}]}} in container["Environment"]


def test_the_template_agrees_with_the_batch_contract_and_the_pipeline():
    template = load_template()
    manifest_suffix = MANIFEST_FILE[MANIFEST_FILE.rindex("."):]

    assert template["Mappings"]["Constants"]["Prefixes"]["Batches"] == BATCHES_PREFIX
    key_matchers = manifest_rule_pattern("b", "E")["detail"]["object"]["key"]
    assert key_matchers == [{"wildcard": f"{BATCHES_PREFIX}/E/*{manifest_suffix}"}]
    assert set(pipeline_parameter_mapping("E")) <= set(PARAMETER_NAMES)


def test_infra_template_prints_the_template(run_cli):
    result = run_cli("infra", "template")

    assert result.returncode == 0 and result.stdout == TEMPLATE_PATH.read_text()


def test_infra_lint_is_clean(run_cli):
    result = run_cli("infra", "lint")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed checks" in result.stdout and "Failed checks: 0" in result.stdout


def test_the_find_champion_function_has_the_name_the_pipeline_invokes():
    from pipelines.contract import CHAMPION_FUNCTION_SUFFIX, champion_function_arn

    function = load_template()["Resources"]["FindChampionFunction"]["Properties"]
    assert function["FunctionName"] == {"Fn::Sub": f"${{PipelineName}}{CHAMPION_FUNCTION_SUFFIX}"}
    assert function["Handler"] == "find_champion.handler"
    assert champion_function_arn("eu-west-2", "arn:aws:iam::111122223333:role/r", "lt") == (
        "arn:aws:lambda:eu-west-2:111122223333:function:lt-find-champion")
def dead_letter_sources(template: dict) -> list[str]:
    """The ARN patterns of the rules whose undeliverable events the dead-letter queue's policy accepts."""
    (statement,) = [s for s in template["Resources"]["EventsDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]
                    ["Statement"] if s.get("Sid") == "AllowUndeliveredEventsFromTheEpicsRules"]
    return [source["Fn::Sub"] for source in statement["Condition"]["ArnLike"]["aws:SourceArn"]]


def test_the_schedule_starts_the_monitoring_pipeline_whose_lambda_publishes_into_one_namespace():
    from pipelines.contract import MONITOR_PIPELINE_SUFFIX, PUBLISH_FUNCTION_SUFFIX
    from processing.monitor import NAMESPACE

    resources = load_template()["Resources"]
    # per epic: a schedule on its endpoint, and the live-lift alarm on that endpoint's figures
    identifier, epics, fragment = resources["Fn::ForEach::MonitoredEpic"]
    assert epics == {"Ref": "Epics"}
    rule = fragment[f"MonitorScheduleRule&{{{identifier}}}"]["Properties"]
    assert rule["ScheduleExpression"] == {"Ref": "MonitorSchedule"}
    (target,) = rule["Targets"]
    assert target["Arn"]["Fn::Sub"].endswith(f":pipeline/${{PipelineName}}{MONITOR_PIPELINE_SUFFIX}")
    endpoint = fragment[f"LiveLiftAlarm&{{{identifier}}}"]["Properties"]["Dimensions"][0]["Value"]
    slug = {"Fn::Join": ["-", {"Fn::Split": [".", {"Ref": identifier}]}]}
    assert endpoint == {"Fn::Join": ["-", [{"Ref": "EndpointName"}, slug]]}
    assert target["SageMakerPipelineParameters"]["PipelineParameterList"] == [
        {"Name": "EndpointName", "Value": endpoint}]
    # undeliverable schedule events reach the dead-letter queue: its policy allows the rules by their names
    assert rule["Name"] == {"Fn::Sub": f"${{PipelineName}}-monitor-${{{identifier}}}"}
    assert any(source.endswith(":rule/${PipelineName}-monitor-*") for source in dead_letter_sources(load_template()))
    # the act-on-alarm Lambda gets the deploy Lambda's prefixes: the alarm's name picks the epic
    act_on_alarm = resources["ActOnAlarmFunction"]["Properties"]["Environment"]["Variables"]
    deploy = resources["DeployFunction"]["Properties"]["Environment"]["Variables"]
    assert {name: act_on_alarm[name] for name in deploy} == deploy
    (start,) = resources["MonitorScheduleRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert start["Action"] == "sagemaker:StartPipelineExecution" and start["Resource"] == target["Arn"]
    function = resources["PublishLiveQualityFunction"]["Properties"]
    assert function["FunctionName"] == {"Fn::Sub": f"${{PipelineName}}{PUBLISH_FUNCTION_SUFFIX}"}
    assert function["Handler"] == "publish_live_quality.handler"
    statements = resources["PublishLiveQualityFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"]
    (put,) = [s for s in statements if s["Action"] == "cloudwatch:PutMetricData"]
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}


# The template's parameters whose defaults are livetrain's (DataBucketName has none: bucket names are global).
CONFIG_PARAMETERS = {"DataBucketName": "bucket", "PipelineName": "pipeline_name",
                     "ModelPackageGroupName": "model_package_group", "EndpointName": "endpoint_name", "Epics": "epic"}


def test_parameter_defaults_are_configs_and_deploy_passes_them():
    parameters = load_template()["Parameters"]
    config = Config()
    defaults = {name: parameters[name].get("Default") for name in CONFIG_PARAMETERS}
    assert defaults == {name: None if name == "DataBucketName" else getattr(config, field)
                        for name, field in CONFIG_PARAMETERS.items()}
    assert set(CONFIG_PARAMETERS) <= set(SET_BY_DEPLOY)  # `infra deploy` always passes them, from its flags
