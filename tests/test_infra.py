"""infra/: the project image, the compose stack and the Kubernetes manifests, checked by
parsing and rendering (no Docker daemon or cluster here): every reference resolves."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

INFRA = REPO / "infra"
K8S = INFRA / "k8s"
PROJECT_IMAGE = "stylegan-mobile"
# A public image pinned to a release: a tag with a version number, never latest.
PINNED = re.compile(r"^[a-z0-9./-]+:(?!latest)[A-Za-z0-9._-]*\d+[A-Za-z0-9._-]*$")


def is_project_or_pinned(image: str) -> bool:
    return image.split(":")[0] == PROJECT_IMAGE or bool(PINNED.match(image))


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} with an empty environment."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


def dvc_bucket() -> str:
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    remote = config["core"]["remote"].strip()
    return config[f"'remote \"{remote}\"'"]["url"].strip().removeprefix("s3://").split("/")[0]


# -- the image ------------------------------------------------------------------------------

def test_the_dockerfile_builds_cpu_and_cuda_variants_from_the_lock_file():
    text = (INFRA / "Dockerfile").read_text()
    targets = re.findall(r"^FROM \S+ AS (\w+)", text, re.M)
    assert {"cpu", "cuda"} <= set(targets)
    assert "COPY pyproject.toml uv.lock ./" in text
    syncs = re.findall(r"uv sync ([^\n\\]*)", text)
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs)
    uv_version = re.search(r"^UV_VERSION := (\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert f"uv=={uv_version}" in text  # the same uv as make setup
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M).group(1)
    assert PINNED.match(base) and base.startswith("python:3.11")


# -- the compose stack ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(interpolate((INFRA / "compose.yaml").read_text()))


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(e.split("=", 1) for e in env) if isinstance(env, list) else {k: str(v) for k, v in env.items()}


def published_ports(service: dict) -> set[int]:
    """Container ports the service publishes or exposes on the stack's network."""
    return {int(str(p).split(":")[-1]) for p in [*service.get("ports", []), *service.get("expose", [])]}


def test_compose_runs_airflow_mlflow_minio_and_postgres(compose):
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "mlflow", "airflow-init", "airflow-apiserver",
            "airflow-scheduler", "airflow-dag-processor"} <= set(services)
    commands = {name: " ".join(map(str, s.get("command", []))) for name, s in services.items()}
    assert commands["airflow-apiserver"].startswith("airflow api-server")
    assert commands["airflow-scheduler"] == "airflow scheduler"
    assert commands["airflow-dag-processor"] == "airflow dag-processor"
    assert commands["mlflow"].startswith("mlflow server")


def test_compose_services_ports_volumes_and_dependencies_are_consistent(compose):
    services, volumes = compose["services"], set(compose.get("volumes", {}))
    host_ports = [int(str(p).split(":")[0]) for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports))
    for name, service in services.items():
        assert is_project_or_pinned(service["image"]), (name, service["image"])
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep in services and dep != name, (name, dep)
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], dep
            if how["condition"] == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", dep
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).resolve().exists(), (name, mount)
            else:
                assert source in volumes, (name, mount)


def test_compose_urls_point_at_services_that_listen_there(compose):
    services = compose["services"]

    def listens(host: str, port: int) -> bool:
        service = services[host]
        command = " ".join(map(str, service.get("command", [])))
        return port in published_ports(service) or f"{port}" in command

    for name, service in services.items():
        for key, value in env_of(service).items():
            for host, port in re.findall(r"://(?:[^@/\s]+@)?([a-z][a-z0-9-]*):(\d+)", value):
                assert host in services and listens(host, int(port)), (name, key, value)
    airflow = env_of(services["airflow-scheduler"])
    assert airflow["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert airflow["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert airflow["AIRFLOW__CORE__DAGS_FOLDER"] == "/workspace/dags"
    assert "..:/workspace" in services["airflow-scheduler"]["volumes"]  # the repository
    # the same credentials on both sides of every S3 call
    minio = env_of(services["minio"])
    for name in ("mlflow", "airflow-scheduler"):
        env = env_of(services[name])
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
            minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])


def test_compose_databases_and_buckets_are_created_before_use(compose):
    services = compose["services"]
    created = set(re.findall(r"CREATE DATABASE (\w+)", (INFRA / "postgres/init-databases.sql").read_text()))
    urls = [env_of(services["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            " ".join(services["mlflow"]["command"])]
    used = {db for url in urls for db in re.findall(r"@postgres:5432/(\w+)", url)}
    assert used == {"airflow", "mlflow"} and used <= created
    buckets = set(re.findall(r"stack/([a-z0-9-]+)", " ".join(services["minio-init"]["command"])))
    artifacts = re.search(r"--artifacts-destination=s3://([a-z0-9-]+)", " ".join(services["mlflow"]["command"]))
    assert {dvc_bucket(), artifacts.group(1)} <= buckets


def test_docker_compose_config_accepts_the_stack():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed here")
    out = subprocess.run([docker, "compose", "-f", str(INFRA / "compose.yaml"), "config", "--quiet"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# -- Kubernetes -----------------------------------------------------------------------------

def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_all(K8S / name)]


def pod_specs(objects: list[dict]):
    for obj in objects:
        if obj["kind"] == "Pod":
            yield obj["metadata"]["name"], obj["spec"]
        elif obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def test_kustomization_lists_every_manifest_and_only_those():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert set(kustomization["resources"]) == files


def test_k8s_objects_have_their_required_fields(manifests):
    kinds = set()
    for obj in manifests:
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name"), obj
        kinds.add(obj["kind"])
        if obj["kind"] in ("Deployment", "StatefulSet"):
            selector = obj["spec"]["selector"]["matchLabels"]
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), obj["metadata"]["name"]
        if obj["kind"] == "StatefulSet":
            assert obj["spec"]["serviceName"]
        if obj["kind"] == "Job":
            assert obj["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert {"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet", "Job",
            "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    workloads = {o["metadata"]["name"] for o in manifests if o["kind"] in ("Deployment", "StatefulSet")}
    assert {"postgres", "minio", "mlflow", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor"} <= workloads


def test_k8s_references_resolve(manifests):
    templates = [doc for p in (K8S / "pod-templates").glob("*.yaml") for doc in load_all(p)]
    secrets = {s["metadata"]["name"]: set(s["stringData"]) for s in load_all(K8S / "secrets.example.yaml")}
    configmaps = {o["metadata"]["name"]: set(o["data"]) for o in manifests if o["kind"] == "ConfigMap"}
    claims = {o["metadata"]["name"] for o in manifests if o["kind"] == "PersistentVolumeClaim"}
    accounts = {o["metadata"]["name"] for o in manifests if o["kind"] == "ServiceAccount"}
    services = [o for o in manifests if o["kind"] == "Service"]
    pod_labels = [o["spec"]["template"]["metadata"].get("labels", {}) for o in manifests
                  if o["kind"] in ("Deployment", "StatefulSet")]
    for svc in services:  # every Service selects a workload
        assert any(svc["spec"]["selector"].items() <= labels.items() for labels in pod_labels), svc
    for name, spec in pod_specs(manifests + templates):
        if "serviceAccountName" in spec:
            assert spec["serviceAccountName"] in accounts, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, name
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, name
        for c in spec["containers"]:
            assert c.get("name") and is_project_or_pinned(c["image"]), (name, c.get("image"))
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes or m["name"] in {"data"}, (name, m)  # data: claim templates
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in configmaps, name
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in secrets, name
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], ()), (name, ref)


def test_k8s_urls_point_at_services_and_the_scheduler_may_start_pods(manifests):
    ports = {o["metadata"]["name"]: {p["port"] for p in o["spec"]["ports"]}
             for o in manifests if o["kind"] == "Service"}
    values = [v for o in manifests if o["kind"] == "ConfigMap" for v in o["data"].values()]
    values += [v for s in load_all(K8S / "secrets.example.yaml") for v in s["stringData"].values()]
    for value in values:
        for host, port in re.findall(r"://(?:[^@/\s]+@)?([a-z][a-z0-9-]*):(\d+)", str(value)):
            assert int(port) in ports.get(host, ()), value
    (role,) = [o for o in manifests if o["kind"] == "Role"]
    pods = next(r for r in role["rules"] if "pods" in r["resources"])
    assert {"create", "get", "watch", "delete"} <= set(pods["verbs"])
    airflow_env = next(o for o in manifests if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "airflow-env")
    assert airflow_env["data"]["STYLEGAN_MOBILE_RUNNER"] == "kubernetes"
    buckets = set(re.findall(r"stack/([a-z0-9-]+)", yaml.safe_dump(manifests)))
    assert dvc_bucket() in buckets and "mlflow" in buckets


def test_the_gpu_pod_template_requests_gpus_and_the_cpu_one_does_not():
    (gpu,) = load_all(K8S / "pod-templates/gpu-stage.yaml")
    (cpu,) = load_all(K8S / "pod-templates/cpu-stage.yaml")
    for pod in (gpu, cpu):
        assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
        (container,) = pod["spec"]["containers"]
        assert container["name"] == "base"  # the container KubernetesPodOperator fills in
        assert container["workingDir"] == "/workspace"
    resources = gpu["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["spec"]["tolerations"])
    assert "nvidia.com/gpu" not in str(cpu)


def test_kubectl_kustomize_renders_the_stack():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed here")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    namespaced = [o for o in rendered if o["kind"] != "Namespace"]
    assert all(o["metadata"]["namespace"] == "stylegan-mobile" for o in namespaced)
    images = {c["image"] for _, spec in pod_specs(rendered) for c in spec["containers"]}
    assert f"{PROJECT_IMAGE}:0.1.0-cpu" in images and all(is_project_or_pinned(i) for i in images)
