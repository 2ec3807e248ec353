"""deploy/: the image, Helm values, instance config, IAM policy and NetworkPolicy agree with
the code they deploy. Offline and fast: files are parsed and checked, nothing is built."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.errors import EXIT_INTEGRITY, EXIT_USAGE
from migrator.keys.keyring import key_context
from migrator.plan.model import DEFAULT_MEMORY_BUDGET, load_plan
from migrator.state.db import STATE_URL_ENV
from pipelines.assets import pool_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VALUES = DEPLOY / "helm" / "values.yaml"
INSTANCE = DEPLOY / "dagster.yaml"
POLICY = DEPLOY / "iam" / "govcloud-policy.json"
NETPOL = DEPLOY / "k8s" / "networkpolicy.yaml"
STORAGE = DEPLOY / "k8s" / "storage.yaml"
STORAGE_CLASSES = [
    DEPLOY / "k8s" / "storageclass-efs.yaml",
    DEPLOY / "k8s" / "storageclass-azurefile.yaml",
]
CLI_POD = DEPLOY / "k8s" / "cli-pod.yaml"
WORKERS_JOB = DEPLOY / "k8s" / "workers-job.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
IMAGE_MANIFESTS = "/opt/migrator/manifests/"  # where the Dockerfile copies manifests/*.yaml

# The state store's Secret: MIGRATOR_STATE_URL (and PGPASSWORD, unless the URL holds it).
STATE_SECRET = "migrator-state"
STATE_ENV = {
    "name": STATE_URL_ENV,
    "valueFrom": {"secretKeyRef": {"name": STATE_SECRET, "key": STATE_URL_ENV}},
}
# The only PostgreSQL driver in the image; SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
PG_SCHEME = "postgresql+psycopg2"
# A PostgreSQL URL with a password in it (user:password@host).
PG_URL_WITH_PASSWORD = re.compile(r"postgres(?:ql)?(?:\+\w+)?://[^/\s@:'\"]+:[^@\s/'\"]*@")

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
    "sign": {"kms:Sign"},  # the signing key: keyrings and ledger segments
    "get_public_key": {"kms:GetPublicKey"},
}
SIGNING_ACTIONS = {"kms:Sign", "kms:GetPublicKey"}
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


def _launcher() -> dict[str, Any]:
    launcher: dict[str, Any] = _values()["runLauncher"]["config"]["k8sRunLauncher"]
    return launcher


def _pods() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """(metadata, spec) of the pods that run the image outside Dagster's run launcher."""
    (pod,) = _yaml_docs(CLI_POD)
    (job,) = _yaml_docs(WORKERS_JOB)
    template = job["spec"]["template"]
    return {
        CLI_POD.name: (pod["metadata"], pod["spec"]),
        WORKERS_JOB.name: (template["metadata"], template["spec"]),
    }


def _walk(node: Any) -> Iterator[Any]:
    """Every mapping, list and scalar of a parsed YAML document, depth first."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)


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
        assert config[key]["config"]["postgres_db"]["scheme"] == PG_SCHEME

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
    assert (
        k8s["run_k8s_config"]["container_config"]["env"]
        == (launcher["runK8sConfig"]["containerConfig"]["env"])
    )
    assert k8s["env_secrets"] == [ref["name"] for ref in launcher["envSecrets"]]

    # What the chart's instance/_postgresql.tpl renders from postgresql.* for each storage.
    pg = values["postgresql"]
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        db = instance[key]["config"]["postgres_db"]
        assert db["username"] == pg["postgresqlUsername"]
        assert db["db_name"] == pg["postgresqlDatabase"]
        assert db["port"] == pg["service"]["port"]
        assert db["params"] == pg["postgresqlParams"]
        assert db["scheme"] == pg["postgresqlScheme"] == PG_SCHEME


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
    kms_calls |= _client_calls(ROOT / "migrator" / "keys" / "aws_kms_signing.py")
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
        elif actions == SIGNING_ACTIONS:  # the signing key alone: no data key is made with it
            assert resource == "${KMS_SIGNING_KEY_ARN}"
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
    assert "--no-cache-dir" in text
    assert "--require-hashes --no-deps -r deploy/requirements.lock" in text
    assert "--no-deps --no-build-isolation ." in text


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


# --- the state store and the shared state volume --------------------------------------------


def test_dagster_storage_urls_name_the_psycopg2_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage config as dagster_postgres itself reads it, and the URL it builds from it."""
    import dagster_postgres  # noqa: F401  (in requirements.lock: a missing one fails, never skips)
    from dagster._config import process_config
    from dagster_postgres.event_log import PostgresEventLogStorage
    from dagster_postgres.run_storage import PostgresRunStorage
    from dagster_postgres.schedule_storage import PostgresScheduleStorage
    from dagster_postgres.utils import pg_url_from_config
    from sqlalchemy.engine import make_url

    monkeypatch.setenv("DAGSTER_PG_HOST", "db.example.internal")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "x")
    instance = _instance()
    for key, storage in [
        ("run_storage", PostgresRunStorage),
        ("event_log_storage", PostgresEventLogStorage),
        ("schedule_storage", PostgresScheduleStorage),
    ]:
        assert instance[key]["class"] == storage.__name__
        result = process_config(storage.config_type(), instance[key]["config"])
        assert result.success, (key, [e.message for e in result.errors or []])
        assert result.value is not None
        url = make_url(pg_url_from_config(result.value))
        assert (url.drivername, url.get_driver_name()) == (PG_SCHEME, "psycopg2"), key


def test_state_store_url_comes_from_a_secret_never_inline() -> None:
    launcher = _launcher()
    # The code server, and through includeConfigInLaunchedRuns every run pod, by reference.
    assert {"name": STATE_SECRET} in _deployment()["envSecrets"]
    assert {"name": STATE_SECRET} in launcher["envSecrets"]
    # Run pods: a required secretKeyRef (no `optional`), so a pod missing the Secret or its key
    # does not start rather than the engine falling back to SQLite in the shared state_dir.
    assert STATE_ENV in launcher["runK8sConfig"]["containerConfig"]["env"]
    for name, (_, spec) in _pods().items():
        (container,) = spec["containers"]
        assert STATE_ENV in container["env"], name
        assert {"secretRef": {"name": STATE_SECRET}} in container["envFrom"], name

    # Nowhere a value: not in an env map, an env list entry or a NAME=value string.
    forbidden = {STATE_URL_ENV, "PGPASSWORD"}
    for path in [VALUES, INSTANCE, *sorted((DEPLOY / "k8s").glob("*.yaml"))]:
        for node in _walk(_yaml_docs(path)):
            where = f"{path.relative_to(DEPLOY)}: {node!r}"
            if isinstance(node, dict):
                assert not forbidden & node.keys(), where
                if node.get("name") in forbidden:
                    assert set(node) == {"name", "valueFrom"}, where
                    assert "secretKeyRef" in node["valueFrom"], where
            elif isinstance(node, str):
                assert not node.startswith(tuple(f"{name}=" for name in forbidden)), where

    # No PostgreSQL URL with a password in any file; the README's Secret holds a URL without
    # one (the password goes in PGPASSWORD), naming the driver.
    for path in DEPLOY.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            text = path.read_text(encoding="utf-8")
            assert not PG_URL_WITH_PASSWORD.search(text), path.relative_to(DEPLOY)
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert f"create secret generic {STATE_SECRET} " in readme
    urls = re.findall(rf"{STATE_URL_ENV}='([^']+)'", readme)
    assert urls and all(url.startswith(f"{PG_SCHEME}://") for url in urls), urls
    from sqlalchemy.engine import make_url

    assert all(make_url(url).password is None for url in urls)


def test_state_dir_is_one_read_write_many_volume_mounted_by_every_pod() -> None:
    (claim,) = _yaml_docs(STORAGE)
    assert claim["kind"] == "PersistentVolumeClaim"
    # Records routing writes every shard's spool; the shard runs, on any node, read theirs.
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for path in STORAGE_CLASSES:
        (storage_class,) = _yaml_docs(path)
        assert storage_class["kind"] == "StorageClass"
        assert storage_class["metadata"]["name"] == claim["spec"]["storageClassName"]
        assert storage_class["provisioner"] in {"efs.csi.aws.com", "file.csi.azure.com"}

    plan = load_plan(_deployed_plan_path(), check_sources=False)
    in_manifests = plan.state_dir.resolve().relative_to((ROOT / "manifests").resolve())
    state_dir = f"{IMAGE_MANIFESTS}{in_manifests.as_posix()}/"
    launcher = _launcher()
    pods = {"run pods": (launcher["volumes"], launcher["volumeMounts"])}
    for name, (_, spec) in _pods().items():
        (container,) = spec["containers"]
        pods[name] = (spec["volumes"], container["volumeMounts"])
    for name, (volumes, mounts) in pods.items():
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in volumes
            if "persistentVolumeClaim" in v
        }
        (mount,) = [m for m in mounts if claims.get(m["name"]) == claim["metadata"]["name"]]
        assert not mount.get("readOnly"), name
        assert state_dir.startswith(mount["mountPath"].rstrip("/") + "/"), (name, state_dir)


def test_run_pods_are_not_pinned_to_a_node() -> None:
    specs = {"run pods": _launcher()["runK8sConfig"]["podSpecConfig"]}
    specs |= {name: spec for name, (_, spec) in _pods().items()}
    for name, spec in specs.items():
        assert not spec.get("nodeSelector"), name
        assert not spec.get("nodeName"), name
        assert "nodeAffinity" not in (spec.get("affinity") or {}), name
    assert not _deployment().get("nodeSelector")
    for path in DEPLOY.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            text = path.read_text(encoding="utf-8")
            assert "migrator/state-node" not in text, path.relative_to(DEPLOY)
            assert "kubectl label node" not in text, path.relative_to(DEPLOY)


def test_cli_pod_and_workers_job_are_run_pods_by_identity_size_and_policy() -> None:
    launcher = _launcher()
    selector = _yaml_docs(NETPOL)[0]["spec"]["podSelector"]["matchLabels"]
    pod_spec = launcher["runK8sConfig"]["podSpecConfig"]
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for name, (metadata, spec) in _pods().items():
        assert selector.items() <= metadata["labels"].items(), name  # egress policy applies
        assert spec["serviceAccountName"] == pod_spec["serviceAccountName"], name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert not spec.get("nodeSelector"), name
        (container,) = spec["containers"]
        assert container["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["resources"] == _run_resources(), name
        # A placeholder replaced at apply time, as the README does.
        assert container["image"] == "REGISTRY/migrator:TAG", name
        assert f'sed "s|REGISTRY/migrator:TAG|$IMAGE|" deploy/k8s/{name}' in readme, name

    (job,) = _yaml_docs(WORKERS_JOB)
    spec = job["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["migrator", "run", _deployment()["env"]["MIGRATOR_PLAN"]], command
    assert "--worker" in command
    # A work queue: the workers exit once the generation is committed.
    assert "completions" not in spec
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    (fail,) = [rule for rule in spec["podFailurePolicy"]["rules"] if rule["action"] == "FailJob"]
    assert fail["onExitCodes"]["containerName"] == container["name"]
    assert set(fail["onExitCodes"]["values"]) == {EXIT_USAGE, EXIT_INTEGRITY}
