"""Static checks of deploy/: the image recipe, the compose file, the k8s manifests.

Fast and offline: no Docker engine, no cluster, no network. The compose file is
validated with `docker compose config -q` where the compose plugin works, else
against the compose-spec JSON schema vendored in check-jsonschema; the k8s
manifests against the Kubernetes OpenAPI schemas shipped (offline) with
kubernetes-validate. Semantic checks follow each: health checks and probes on
the metrics endpoints, dependencies, non-root, no secrets in plain config, and
every environment variable a known setting whose value the settings accept.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices

from fulfil_platform.config import Settings
from services.notifier.config import NotifierSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

# Oldest Kubernetes minor we claim to support; kubernetes-validate ships its schemas.
K8S_VERSION = "1.31.0"
METRICS_PORT = 9100
FULFIL_IMAGE_HINT = "fulfil"

# Every long-running service and the command it runs (ENTRYPOINT is `fulfil`).
SERVICE_COMMANDS = {
    "allocator-router": ["allocator", "--stage", "router"],
    "allocator-core": ["allocator", "--stage", "core"],
    "projector": ["projector"],
    "notifier": ["notifier"],
}
TOPICS_COMMAND = ["topics", "create"]
# Consumer groups built into the code (without FULFIL_TOPIC_PREFIX).
CONSUMER_GROUPS = {
    "allocator-router": "fulfil-allocator-router",
    "allocator-core": "fulfil-allocator-core",
    "projector": "fulfil-projector",
    "notifier": "fulfil-notifier",
}

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|CREDENTIAL", re.IGNORECASE)
DEV_DEFAULT = re.compile(r"^\$\{[A-Z0-9_]+:-[A-Za-z0-9_.-]*dev[A-Za-z0-9_.-]*\}$")
INTERPOLATION = re.compile(r"\$\{([A-Za-z0-9_]+)(?::?[-?]([^}]*))?\}")


# --------------------------------------------------------------------- helpers


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with nothing set in the environment."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def runs_fulfil(service: dict[str, Any]) -> bool:
    build = service.get("build") or {}
    dockerfile = build.get("dockerfile", "") if isinstance(build, dict) else ""
    return (
        dockerfile.endswith("deploy/Dockerfile")
        or FULFIL_IMAGE_HINT in str(service.get("image", "")).split(":")[0].split("/")[-1]
    )


def fulfil_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if runs_fulfil(svc)}


def k8s_manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in k8s_manifest_files() for doc in load_all(path)]


def k8s_by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    return {**k8s_by_kind("Deployment"), **k8s_by_kind("StatefulSet")}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def workload_for(service: str) -> dict[str, Any]:
    return workloads()[f"fulfil-{service}"]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def known_names(model: type[Settings]) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name.upper())
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
    return names


SHARED_SETTINGS = known_names(Settings)
NOTIFIER_SETTINGS = known_names(NotifierSettings)


def settings_kwargs(env: dict[str, str], model: type[Settings]) -> dict[str, str]:
    fields = set(model.model_fields)
    return {k.lower(): v for k, v in env.items() if k.lower() in fields}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings read os.environ too: hide the runner's own settings."""
    for name in NOTIFIER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    yield


# ----------------------------------------------------------------- every YAML


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"


def test_the_expected_files_exist() -> None:
    for name in (
        "Dockerfile",
        "compose.yaml",
        "README.md",
        "k8s/kustomization.yaml",
        "k8s/configmap.yaml",
        "k8s/secret.template.yaml",
        "k8s/topics-job.yaml",
    ):
        assert (DEPLOY / name).is_file(), name


# --------------------------------------------------------------- compose file


def _docker_compose_works() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "check-jsonschema"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "check_jsonschema"]
    return subprocess.run(
        [*cmd, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_is_valid_compose() -> None:
    if _docker_compose_works():
        done = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    done = _check_jsonschema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    # The validator itself is not vacuous: a bad condition and an unknown key fail.
    bad = tmp_path / "compose.yaml"
    bad.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: when_ready}\n    bogus: 1\n",
        encoding="utf-8",
    )
    assert _check_jsonschema(bad).returncode != 0


def test_compose_runs_every_service_from_the_one_image() -> None:
    services = fulfil_services()
    assert set(services) == {*SERVICE_COMMANDS, "topics"}
    for name, svc in services.items():
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert (
            COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]
        ).resolve() == DOCKERFILE
        assert "entrypoint" not in svc, f"{name}: the image's ENTRYPOINT is `fulfil`"
    for name, command in SERVICE_COMMANDS.items():
        assert services[name]["command"] == command, name
    assert services["topics"]["command"] == TOPICS_COMMAND
    assert services["topics"].get("restart") == "no"


def test_compose_fulfil_services_have_a_healthcheck_on_the_metrics_endpoint() -> None:
    for name in SERVICE_COMMANDS:
        svc = fulfil_services()[name]
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        test = check["test"]
        text = test if isinstance(test, str) else " ".join(test)
        assert f"127.0.0.1:{METRICS_PORT}/readyz" in text, name
        assert "curl" not in text and "wget" not in text, f"{name}: the image has neither"
        assert env_of(svc).get("FULFIL_METRICS_PORT") == str(METRICS_PORT), name


def test_compose_dependencies_exist_and_are_health_gated() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target}'s health, which has none"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", target
    fulfil = fulfil_services()
    for name, svc in fulfil.items():
        deps = svc["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy", name
        if name != "topics":
            assert deps["topics"]["condition"] == "service_completed_successfully", name
    for name in ("projector", "notifier"):
        assert fulfil[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert fulfil["notifier"]["depends_on"]["mailpit"]["condition"] == "service_healthy"


def test_compose_kafka_is_apache_kafka_in_kraft_mode() -> None:
    kafka = compose()["services"]["kafka"]
    image = kafka["image"]
    assert image.startswith("apache/kafka:") and not image.endswith(":latest")
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert not any("ZOOKEEPER" in k for k in env), "KRaft: no ZooKeeper"
    # Whatever the broker may auto-create (the `.redriven` audit topics, which
    # `topics create` leaves out) gets the partition count of the services' topics.
    if env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true") != "false":
        partitions = env_of(fulfil_services()["topics"])["FULFIL_PARTITIONS"]
        assert env["KAFKA_NUM_PARTITIONS"] == partitions
    test = " ".join(kafka["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in test
    # What the services are told to use is what the broker advertises to containers.
    bootstrap = env_of(fulfil_services()["allocator-core"])["KAFKA_BOOTSTRAP_SERVERS"]
    assert f"PLAINTEXT://{bootstrap}" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")


def test_compose_postgres_and_mail_catcher() -> None:
    services = compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    database_url = urlsplit(interpolate(env_of(fulfil_services()["projector"])["DATABASE_URL"]))
    pg_env = {k: interpolate(v) for k, v in env_of(postgres).items()}
    assert database_url.scheme == "postgresql" and database_url.hostname == "postgres"
    assert database_url.username == pg_env["POSTGRES_USER"]
    assert database_url.password == pg_env["POSTGRES_PASSWORD"]
    assert database_url.path == "/" + pg_env["POSTGRES_DB"]
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    assert env_of(fulfil_services()["notifier"])["SMTP_URL"] == "smtp://mailpit:1025"


def test_compose_allocator_core_keeps_its_state_on_a_named_volume() -> None:
    doc = compose()
    core = doc["services"]["allocator-core"]
    state_dir = env_of(core)["FULFIL_STATE_DIR"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in core["volumes"]}
    assert state_dir in mounts
    assert mounts[state_dir] in doc["volumes"], "a named volume, declared at the top level"


def test_compose_images_are_pinned_and_ports_local() -> None:
    for name, svc in compose()["services"].items():
        if not runs_fulfil(svc):
            assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_compose_has_no_secrets_but_local_dev_defaults() -> None:
    for name, svc in compose()["services"].items():
        for key, value in env_of(svc).items():
            if SECRET_NAME.search(key):
                assert DEV_DEFAULT.match(value), f"{name}: {key} must be ${{VAR:-...dev...}}"
            if "://" in value:
                password = urlsplit(value).password
                if password is not None:
                    assert DEV_DEFAULT.match(password), f"{name}: {key} embeds a password"


# ------------------------------------------------------------- settings names


def test_every_env_var_of_compose_is_a_known_setting() -> None:
    for name, svc in fulfil_services().items():
        known = NOTIFIER_SETTINGS if name == "notifier" else SHARED_SETTINGS
        unknown = set(env_of(svc)) - known
        assert not unknown, f"compose {name}: not settings of fulfil: {sorted(unknown)}"


def test_compose_settings_are_accepted_by_the_services(clean_env: None) -> None:
    for name, svc in fulfil_services().items():
        env = {k: interpolate(v) for k, v in env_of(svc).items()}
        if name == "notifier":
            settings = NotifierSettings(**settings_kwargs(env, NotifierSettings))
            settings.check_channels()
            assert settings.require_channels() == ("email",)
        else:
            settings = Settings(**settings_kwargs(env, Settings))
        settings.kafka_client_options()
        if name in ("projector", "notifier"):
            settings.require_database()


def _k8s_env_sources() -> dict[str, dict[str, str]]:
    """name of a ConfigMap / Secret -> its keys and values."""
    sources: dict[str, dict[str, str]] = {}
    for doc in k8s_docs():
        if doc["kind"] == "ConfigMap":
            sources[doc["metadata"]["name"]] = dict(doc.get("data", {}))
        elif doc["kind"] == "Secret":
            sources[doc["metadata"]["name"]] = dict(doc.get("stringData", {}))
    return sources


def _k8s_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in k8s_docs():
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            for container in pod_spec(doc)["containers"]:
                yield doc["metadata"]["name"], container


def _k8s_env(container: dict[str, Any]) -> dict[str, str]:
    sources = _k8s_env_sources()
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        source = ref.get("configMapRef") or ref.get("secretRef")
        assert source["name"] in sources, f"envFrom {source['name']}: not in deploy/k8s"
        env.update(sources[source["name"]])
    env.update(container_env(container))
    return env


def test_every_env_var_of_k8s_is_a_known_setting() -> None:
    for workload, container in _k8s_containers():
        known = NOTIFIER_SETTINGS if workload == "fulfil-notifier" else SHARED_SETTINGS
        unknown = set(_k8s_env(container)) - known
        assert not unknown, f"k8s {workload}: not settings of fulfil: {sorted(unknown)}"


def test_k8s_settings_are_accepted_by_the_services(clean_env: None) -> None:
    for workload, container in _k8s_containers():
        env = _k8s_env(container)
        model = NotifierSettings if workload == "fulfil-notifier" else Settings
        settings = model(**settings_kwargs(env, model))
        assert settings.kafka_security_protocol == "SASL_SSL"
        settings.kafka_client_options()  # SASL needs mechanism + username
        if isinstance(settings, NotifierSettings):
            settings.check_channels()
            settings.require_channels()


# ------------------------------------------------------------- k8s manifests


@pytest.mark.parametrize("path", k8s_manifest_files(), ids=lambda p: p.name)
def test_k8s_manifests_validate_against_the_kubernetes_schema(path: Path) -> None:
    for doc in load_all(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_k8s_schema_check_rejects_a_broken_manifest() -> None:
    doc = json.loads(json.dumps(workload_for("projector")))
    pod_spec(doc)["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["kind"] == "Kustomization"
    expected = {p.name for p in k8s_manifest_files()} - {"secret.template.yaml"}
    assert set(kustomization["resources"]) == expected
    images = {i["name"] for i in kustomization.get("images", [])}
    for _, container in _k8s_containers():
        assert container["image"].rsplit(":", 1)[0] in images


def test_k8s_has_one_workload_per_service() -> None:
    assert set(k8s_by_kind("Deployment")) == {
        "fulfil-allocator-router",
        "fulfil-projector",
        "fulfil-notifier",
    }
    assert set(k8s_by_kind("StatefulSet")) == {"fulfil-allocator-core"}
    for service, command in SERVICE_COMMANDS.items():
        (container,) = pod_spec(workload_for(service))["containers"]
        assert container["args"] == command, service
        assert "command" not in container, "the image's ENTRYPOINT is `fulfil`"
    (job,) = k8s_by_kind("Job").values()
    (container,) = pod_spec(job)["containers"]
    assert container["args"][:2] == TOPICS_COMMAND
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    by_name = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in by_name, f"probe port {port!r} names no containerPort"
    return by_name[port]


def test_k8s_probes_hit_the_metrics_endpoints() -> None:
    for name, doc in workloads().items():
        for container in pod_spec(doc)["containers"]:
            env = container_env(container)
            assert env.get("FULFIL_METRICS_PORT") == str(METRICS_PORT), name
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                http = container[probe]["httpGet"]
                assert http["path"] == path, f"{name} {probe}"
                assert _port_number(container, http["port"]) == METRICS_PORT, f"{name} {probe}"
            if "startupProbe" in container:
                assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name


def test_k8s_containers_have_resources_config_secrets_and_run_as_non_root() -> None:
    for doc in [*workloads().values(), *k8s_by_kind("Job").values()]:
        name = doc["metadata"]["name"]
        spec = pod_spec(doc)
        pod_security = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources.get("limits", {}), name
            refs = container["envFrom"]
            assert {"name": "fulfil-config"} in [r.get("configMapRef") for r in refs], name
            assert any("secretRef" in r for r in refs), f"{name}: secrets come from a Secret"
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, name
            assert security.get("runAsUser", 1) != 0, name
            assert security.get("allowPrivilegeEscalation") is False, name
            assert "ALL" in security.get("capabilities", {}).get("drop", []), name
            assert not container["image"].endswith(":latest"), name
            assert container.get("imagePullPolicy") == "IfNotPresent", name


def test_k8s_allocator_core_keeps_snapshots_on_a_claimed_volume() -> None:
    core = workload_for("allocator-core")
    assert core["kind"] == "StatefulSet"
    state_dir = _k8s_env_sources()["fulfil-config"]["FULFIL_STATE_DIR"]
    claims = {t["metadata"]["name"] for t in core["spec"]["volumeClaimTemplates"]}
    (container,) = pod_spec(core)["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts.get(state_dir) in claims
    assert (
        pod_spec(core)["securityContext"]["fsGroup"]
        == pod_spec(core)["securityContext"]["runAsGroup"]
    )
    headless = k8s_by_kind("Service")[core["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    text = (K8S / "allocator-core.yaml").read_text(encoding="utf-8")
    assert "snapshot" in text and "re-fold" in text, "say why it is a StatefulSet"


def test_k8s_services_expose_the_metrics_port_for_prometheus() -> None:
    services = k8s_by_kind("Service")
    for name, doc in workloads().items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        (container,) = pod_spec(doc)["containers"]
        matching = [s for s in services.values() if s["spec"]["selector"].items() <= labels.items()]
        assert matching, f"no Service selects {name}"
        for service in matching:
            annotations = service["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(METRICS_PORT)
            assert annotations["prometheus.io/path"] == "/metrics"
            (port,) = service["spec"]["ports"]
            assert _port_number(container, port["targetPort"]) == METRICS_PORT


def test_k8s_comments_name_the_consumer_group_of_each_service() -> None:
    for service, group in CONSUMER_GROUPS.items():
        text = (K8S / f"{service}.yaml").read_text(encoding="utf-8")
        assert f"<FULFIL_TOPIC_PREFIX>{group}" in text, service
        assert "consumer group" in text and "idle" in text, service


def test_k8s_config_maps_hold_no_secrets() -> None:
    for name, doc in k8s_by_kind("ConfigMap").items():
        for key, value in doc.get("data", {}).items():
            assert not SECRET_NAME.search(key), f"{name}: {key} belongs in a Secret"
            assert key not in ("DATABASE_URL", "KAFKA_SASL_USERNAME"), (
                f"{name}: {key} belongs in a Secret"
            )
            if "://" in value:
                assert urlsplit(value).password is None, f"{name}: {key} embeds a password"


def test_k8s_secret_template_holds_placeholders_only() -> None:
    secrets = k8s_by_kind("Secret")
    assert set(secrets) == {"fulfil-secrets", "fulfil-notifier-secrets"}
    for name, doc in secrets.items():
        assert "data" not in doc, f"{name}: stringData placeholders, never encoded values"
        for key, value in doc["stringData"].items():
            assert "CHANGE-ME" in value, f"{name}: {key} is not a placeholder"
    assert "DATABASE_URL" in secrets["fulfil-secrets"]["stringData"]
    assert "kubectl" in (K8S / "secret.template.yaml").read_text(encoding="utf-8")


def test_k8s_tls_mounts_are_optional_secrets() -> None:
    for doc in [*workloads().values(), *k8s_by_kind("Job").values()]:
        for volume in pod_spec(doc).get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["optional"] is True, doc["metadata"]["name"]


# ----------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "a continuation line runs off the end"
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
    ]


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = [[]]
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result  # result[0]: global ARGs before the first FROM


def test_dockerfile_bases_are_slim_python_311() -> None:
    args = dict(a.split("=", 1) for op, a in stages()[0] if op == "ARG" and "=" in a)
    for stage in stages()[1:]:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if image in {s[0][1].split()[-1] for s in stages()[1:] if " AS " in s[0][1].upper()}:
            continue  # FROM an earlier stage
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image), image


def test_dockerfile_final_stage_runs_fulfil_as_non_root() -> None:
    final = stages()[-1]
    users = [a for op, a in final if op == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    entrypoints = [a for op, a in final if op == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["fulfil"]
    assert str(METRICS_PORT) in " ".join(a for op, a in final if op == "EXPOSE")
    assert not any(op == "HEALTHCHECK" for op, _ in final), "one image runs one-shot commands too"


def test_dockerfile_installs_with_the_constraints() -> None:
    runs = [a for stage in stages() for op, a in stage if op == "RUN" and "pip install" in a]
    assert runs
    for run in runs:
        words = shlex.split(run)
        assert "-c" in words and words[words.index("-c") + 1] == "constraints.txt", run
        assert "-e" not in words and "--editable" not in words, run


def test_dockerfile_copies_an_explicit_list_the_package_builds_from() -> None:
    sources: set[str] = set()
    for stage in stages():
        for op, args in stage:
            if op == "COPY" and "--from=" not in args:
                words = [w for w in shlex.split(args) if not w.startswith("--")]
                sources.update(w.rstrip("/") for w in words[:-1])
    assert "." not in sources and "*" not in "".join(sources), "keep the COPY list explicit"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert {"pyproject.toml", "constraints.txt", pyproject["project"]["readme"]} <= sources
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in sources, f"package {pattern} is not copied into the build"


def test_the_commands_used_by_deploy_are_commands_of_fulfil() -> None:
    """Parse every command line (options and choices included) without running it."""
    commands = [*SERVICE_COMMANDS.values(), TOPICS_COMMAND, ["topics", "create", "--json"]]
    script = (
        "import json, sys, typer\n"
        "from fulfil import cli\n"
        "cli._register()\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    cmd, ctx, name, rest = typer.main.get_command(cli.app), None, 'fulfil', list(args)\n"
        "    while hasattr(cmd, 'get_command'):  # a group: descend by name\n"
        "        ctx = cmd.make_context(name, rest[:1], parent=ctx)\n"
        "        sub = cmd.get_command(ctx, rest[0])\n"
        "        assert sub is not None, f'no command {rest[0]!r} in {args}'\n"
        "        cmd, name, rest = sub, rest[0], rest[1:]\n"
        "    cmd.make_context(name, rest, parent=ctx)  # raises on an unknown option or choice\n"
        "    print(' '.join(args), 'ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" ok") == len(commands)


# --------------------------------------------------------------------- README


def test_deploy_readme_gives_the_commands() -> None:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for needle in (
        "docker build -f deploy/Dockerfile -t fulfil .",
        "docker compose -f deploy/compose.yaml up",
        "kubectl",
        "SCRAM-SHA-512",
        "sslmode",
    ):
        assert needle in text, needle
