"""deploy/: the image, Helm values, instance config, IAM policy and NetworkPolicy agree with
the code they deploy. Offline and fast: files are parsed and checked, nothing is built."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.keys.keyring import key_context
from migrator.plan.model import DEFAULT_MEMORY_BUDGET, load_plan
from pipelines.assets import pool_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VALUES = DEPLOY / "helm" / "values.yaml"
INSTANCE = DEPLOY / "dagster.yaml"
POLICY = DEPLOY / "iam" / "govcloud-policy.json"
NETPOL = DEPLOY / "k8s" / "networkpolicy.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
IMAGE_MANIFESTS = "/opt/migrator/manifests/"  # where the Dockerfile copies manifests/*.yaml

MIB = 1024 * 1024
# What a run pod holds besides the engine's budget: interpreter, Dagster, boto3, zstd contexts.
RUN_OVERHEAD = 512 * MIB

# boto3 client method (or paginator) -> the IAM actions it needs. A call missing here fails
# test_iam_policy_grants_exactly_what_the_code_calls: map it, then update the policy.
S3_ACTIONS = {
    "put_object": {"s3:PutObject"},
    "create_multipart_upload": {"s3:PutObject"},
    "upload_part": {"s3:PutObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "copy_object": {"s3:GetObject", "s3:PutObject"},  # same bucket and prefix, both sides
    "get_object": {"s3:GetObject"},
    "head_object": {"s3:GetObject"},
    "delete_object": {"s3:DeleteObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "list_parts": {"s3:ListMultipartUploadParts"},
    "list_objects_v2": {"s3:ListBucket"},
    "list_multipart_uploads": {"s3:ListBucketMultipartUploads"},
}
KMS_ACTIONS = {
    "generate_data_key": {"kms:GenerateDataKey"},
    "decrypt": {"kms:Decrypt"},
    "encrypt": {"kms:Encrypt"},  # `migrator keys rotate` re-wraps data keys
}
BUCKET_LEVEL = {"s3:ListBucket", "s3:ListBucketMultipartUploads"}


def _yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text(encoding="utf-8"))


def _instance() -> dict[str, Any]:
    return yaml.safe_load(INSTANCE.read_text(encoding="utf-8"))


def _quantity(text: str | int) -> int:
    """A Kubernetes memory quantity in bytes ("3Gi", "512Mi", "1G", 1073741824)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}
    units |= {"G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+)([KMGT]i?|k)?", str(text))
    assert match, f"not a memory quantity: {text!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def _cpu(text: str | int | float) -> float:
    value = str(text)
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _client_calls(path: Path) -> set[str]:
    """Names of the boto3 methods a module calls on its client, paginators included."""
    calls: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        target = node.func.value
        on_client = (isinstance(target, ast.Attribute) and target.attr == "_client") or (
            isinstance(target, ast.Name) and target.id == "client"
        )
        if not on_client:
            continue
        if node.func.attr == "get_paginator":
            arg = node.args[0]
            assert isinstance(arg, ast.Constant), f"{path.name}: dynamic paginator name"
            calls.add(str(arg.value))
        else:
            calls.add(node.func.attr)
    return calls


def _run_resources() -> dict[str, Any]:
    launcher = _values()["runLauncher"]["config"]["k8sRunLauncher"]
    return launcher["runK8sConfig"]["containerConfig"]["resources"]


def _deployment() -> dict[str, Any]:
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    return deployment


def _deployed_plan_path() -> Path:
    image_path = _deployment()["env"]["MIGRATOR_PLAN"]
    assert image_path.startswith(IMAGE_MANIFESTS), image_path
    return ROOT / "manifests" / image_path.removeprefix(IMAGE_MANIFESTS)


# --- every file parses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".json"}),
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    if path.suffix == ".json":
        assert json.loads(path.read_text(encoding="utf-8"))
    else:
        assert _yaml_docs(path)


def test_deploy_has_no_secrets_and_no_machine_paths() -> None:
    secret_like = re.compile(
        r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|AccountKey=|SharedAccessSignature"
        r"|[?&]sig=|aws_secret_access_key|password:\s*['\"]?[^\s'\"{][^\s]*",
        re.IGNORECASE,
    )
    for path in DEPLOY.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(DEPLOY)
        assert not secret_like.search(text), f"{rel}: {secret_like.search(text)}"
        assert not re.search(r"/(work|home|Users)/", text), f"{rel}: a machine path"


# --- dagster.yaml ---------------------------------------------------------------------------


def test_instance_config_validates_with_dagsters_own_schema() -> None:
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
    from dagster._core.storage.config import pg_config

    # The top level, the concurrency section and their cross-checks, as the instance loads it.
    config, custom_class = dagster_instance_config(str(DEPLOY), INSTANCE.name)
    assert custom_class is None

    # The storage classes come from dagster_postgres, which the image installs but this
    # environment need not: their config schema is dagster core's pg_config(), checked here.
    for key, module in [
        ("run_storage", "dagster_postgres.run_storage"),
        ("event_log_storage", "dagster_postgres.event_log"),
        ("schedule_storage", "dagster_postgres.schedule_storage"),
    ]:
        assert config[key]["module"] == module
        result = validate_config(pg_config(), config[key]["config"])
        assert result.success, (key, [e.message for e in result.errors])
        assert config[key]["config"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}

    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    result = validate_config(QueuedRunCoordinator.config_type(), coordinator["config"])
    assert result.success, [e.message for e in result.errors]

    # K8sRunLauncher's schema lives in dagster_k8s: validated when installed, else its shape.
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    try:
        from dagster_k8s import K8sRunLauncher
    except ImportError:
        assert isinstance(launcher["config"], dict)
        assert launcher["config"]["run_k8s_config"]["container_config"]["resources"]
    else:
        result = validate_config(K8sRunLauncher.config_type(), launcher["config"])
        assert result.success, [e.message for e in result.errors]

    assert config["run_retries"]["enabled"] is True
    assert config["run_retries"]["max_retries"] >= 1
    assert config["concurrency"]["runs"]["max_concurrent_runs"] > 0
    assert config["concurrency"]["pools"]["default_limit"] > 0


def test_instance_config_matches_what_the_helm_values_render() -> None:
    values, instance = _values(), _instance()
    retries = values["dagsterDaemon"]["runRetries"]
    assert instance["run_retries"] == {
        "enabled": retries["enabled"],
        "max_retries": retries["maxRetries"],
        "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
    }
    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    assert instance["concurrency"]["pools"] == {
        "default_limit": concurrency["pools"]["defaultLimit"],
        "granularity": concurrency["pools"]["granularity"],
    }
    assert instance["concurrency"]["runs"] == {
        "max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"],
        "tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"],
    }
    # The run limits are in one place only: the chart and Dagster both refuse two.
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in queued and "tagConcurrencyLimits" not in queued
    assert "max_concurrent_runs" not in instance["run_coordinator"]["config"]

    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    k8s = instance["run_launcher"]["config"]
    assert k8s["run_k8s_config"]["container_config"]["resources"] == _run_resources()
    assert k8s["labels"] == launcher["labels"]
    assert (
        k8s["service_account_name"]
        == (launcher["runK8sConfig"]["podSpecConfig"]["serviceAccountName"])
    )
    assert k8s["postgres_password_secret"] == values["global"]["postgresqlSecretName"]


# --- Helm values ----------------------------------------------------------------------------


def test_helm_values_run_this_project_with_secrets_by_reference_only() -> None:
    values = _values()
    deployment = _deployment()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["generatePostgresqlPasswordSecret"] is False
    assert deployment["codeServerArgs"] == ["-m", "pipelines"]
    assert deployment["env"]["MIGRATOR_DEPLOYMENT"] in {"dry-run", "production"}
    assert deployment["image"]["tag"] != "latest"
    assert _deployed_plan_path().is_file()
    assert all(set(ref) == {"name"} for ref in deployment["envSecrets"])
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"


def test_run_pod_resources_cover_the_engines_memory_budget() -> None:
    plan = load_plan(_deployed_plan_path(), check_sources=False)
    budget = max(plan.memory_budget, DEFAULT_MEMORY_BUDGET)
    resources = _run_resources()
    requests, limits = resources["requests"], resources["limits"]
    assert _quantity(requests["memory"]) >= budget + RUN_OVERHEAD
    assert _quantity(limits["memory"]) >= _quantity(requests["memory"])
    assert _cpu(requests["cpu"]) >= 1
    assert _cpu(limits["cpu"]) >= _cpu(requests["cpu"])


def test_the_pool_named_in_the_docs_is_the_assets_pool() -> None:
    plan = load_plan(_deployed_plan_path(), check_sources=False)
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert f"dagster instance concurrency set {pool_name(plan)} " in readme
    assert pool_name(plan) in VALUES.read_text(encoding="utf-8")


# --- IAM ------------------------------------------------------------------------------------


def test_iam_policy_grants_exactly_what_the_code_calls() -> None:
    s3_calls = _client_calls(ROOT / "migrator" / "stores" / "s3.py")
    kms_calls = _client_calls(ROOT / "migrator" / "keys" / "aws_kms.py")
    assert s3_calls and kms_calls
    unmapped = (s3_calls - S3_ACTIONS.keys()) | (kms_calls - KMS_ACTIONS.keys())
    assert not unmapped, f"new client calls: map them to IAM actions, update the policy: {unmapped}"
    needed = set().union(*(S3_ACTIONS[c] for c in s3_calls), *(KMS_ACTIONS[c] for c in kms_calls))

    policy = json.loads(POLICY.read_text(encoding="utf-8"))
    granted: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else actions
        assert not any("*" in action for action in actions), actions
        assert statement["Resource"] != "*"
        granted |= set(actions)
    assert granted == needed


def test_iam_policy_scopes_each_action_to_the_prefix_bucket_or_key() -> None:
    policy = json.loads(POLICY.read_text(encoding="utf-8"))
    for statement in policy["Statement"]:
        actions = set(statement["Action"])
        resource = statement["Resource"]
        if actions <= BUCKET_LEVEL:
            assert resource == "arn:aws-us-gov:s3:::${BUCKET}"
            assert statement["Condition"]["StringLike"]["s3:prefix"] == ["${PREFIX}*"]
        elif all(a.startswith("s3:") for a in actions):
            assert resource == "arn:aws-us-gov:s3:::${BUCKET}/${PREFIX}*"
        else:
            assert actions == {"kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt"}
            assert resource == "${KMS_KEY_ARN}"
            condition = statement["Condition"]
            context_keys = sorted(key_context("plan", "dataset"))
            assert sorted(condition["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"]) == (
                context_keys
            )
            plan_condition = {"kms:EncryptionContext:migrator:plan": "${PLAN_NAME}"}
            assert condition["StringEquals"] == plan_condition


# --- NetworkPolicy --------------------------------------------------------------------------


def test_run_pods_may_reach_only_dns_https_and_postgresql() -> None:
    worker, default_deny = _yaml_docs(NETPOL)
    spec = worker["spec"]
    launcher = _values()["runLauncher"]["config"]["k8sRunLauncher"]
    assert spec["podSelector"]["matchLabels"].items() <= launcher["labels"].items()
    pod_labels = launcher["runK8sConfig"]["podTemplateSpecMetadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert spec["ingress"] == []
    ports: set[int] = set()
    for rule in spec["egress"]:
        assert rule.get("ports"), "an egress rule without ports allows every port"
        assert rule.get("to"), "an egress rule without peers allows every destination"
        ports |= {port["port"] for port in rule["ports"]}
    assert ports == {53, 443, 5432}
    assert default_deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}


# --- image ----------------------------------------------------------------------------------


def test_dockerfile_runs_as_non_root_from_a_pinned_slim_base() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    bases = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", b) for b in bases), bases
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, "no USER line: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-zero uid (runAsNonRoot)"
    assert not any(line.startswith("ENTRYPOINT") for line in instructions), (
        "the chart and the run launcher pass the whole command as args"
    )
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "--no-cache-dir" in text and "-c deploy/constraints.txt" in text


def test_dockerfile_copies_no_secret_looking_files() -> None:
    secretish = re.compile(
        r"\.env\b|\.pem\b|\.key\b|\.kek\b|id_rsa|credentials|\.aws|\.azure|\.kube|secret",
        re.IGNORECASE,
    )
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.startswith(("COPY", "ADD")):
            assert not secretish.search(line), line
            assert not line.startswith("ADD"), "ADD can fetch URLs and unpack archives"
        if line.startswith(("ENV", "ARG")):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", line, re.I), line
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("**") - 1].startswith("#") and "**" in ignore


def test_pins_match_the_tested_dagster() -> None:
    from importlib.metadata import version

    pins = {}
    for path in [DEPLOY / "constraints.txt", DEPLOY / "requirements-dagster-k8s.txt"]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                name, _, pinned = line.partition("==")
                assert pinned, f"{path.name}: {line!r} is not pinned"
                pins[name] = pinned
    assert pins["dagster"] == version("dagster")
    major, minor, patch = pins["dagster"].split(".")
    assert major == "1"
    for library in ["dagster-postgres", "dagster-k8s"]:
        assert pins[library] == f"0.{int(minor) + 16}.{patch}", library
    for name in ["boto3", "cryptography", "xxhash", "zstandard", "orjson", "pydantic", "pyyaml"]:
        assert pins[name] == version(name), name
