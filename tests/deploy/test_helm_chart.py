"""The Helm chart: lint, schema-valid manifests for every scenario, and the fields that matter rendered
right (Airflow-style ``render_chart`` tests against the real ``helm template``)."""

import json
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helpers.deploytools import (
    CHART,
    CI_VALUES,
    DASHBOARD,
    KUBERNETES_VERSION,
    RULES,
    by_kind,
    helm,
    one,
    render_chart,
    render_error,
    run,
    tool,
)

SCENARIOS = [None, *CI_VALUES]
SCENARIO_IDS = ["default", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]
ALL_FEATURES = (CHART / "ci" / "all-features-values.yaml",)
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (the pod must listen on its own address, not loopback)
SELECTOR = {"app.kubernetes.io/name": "peach-scheduler", "app.kubernetes.io/instance": "peach"}


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


def config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    configmaps = [o for o in by_kind(objects, "ConfigMap") if "config.yaml" in o.get("data", {})]
    assert len(configmaps) == 1
    data: dict[str, Any] = yaml.safe_load(configmaps[0]["data"]["config.yaml"])
    return data


def checksum(objects: list[dict[str, Any]]) -> str:
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations["checksum/restart-config"]
    return value


# -- lint and schema validation -----------------------------------------------------------------------


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_helm_lint_strict(values: Path | None) -> None:
    proc = helm("lint", "--strict", CHART, *(["--values", values] if values else []))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_every_manifest_is_valid_kubernetes(values: Path | None) -> None:
    objects = render_chart(files=(values,) if values else ())
    assert {"Deployment", "Service", "ConfigMap"} <= {o["kind"] for o in objects}
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue  # no OpenAPI schema offline: checked below by structure and promtool
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_cli_strict_on_rendered_files(tmp_path: Path) -> None:
    """The same through the ``kubernetes-validate --strict`` command, as an operator would run it."""
    objects = [o for o in render_chart(files=ALL_FEATURES) if o["kind"] not in CRD_KINDS]
    paths = []
    for i, obj in enumerate(objects):
        paths.append(tmp_path / f"{i}-{obj['kind']}.yaml")
        paths[-1].write_text(yaml.safe_dump(obj), encoding="utf-8")
    proc = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, "--quiet", *paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken.yaml"
    deployment = one(objects, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProb"] = {}
    broken.write_text(yaml.safe_dump(deployment), encoding="utf-8")
    proc = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, broken)
    assert proc.returncode != 0 and "livenessProb" in proc.stdout + proc.stderr


def test_values_schema_rejects_typos_and_chart_owned_keys() -> None:
    assert "replica" in render_error({"replica": 2})
    assert "workspace" in render_error({"config": {"workspace": "/elsewhere"}})
    assert "deploy_mode" in render_error({"config": {"spark": {"deploy_mode": "yarn"}}})
    assert "timeout" in render_error({"config": {"loops": {"timeout": "one hour"}}})
    assert "organisations" in render_error({"config": {"organisations": {"metadata": {}}}})  # reserved
    assert "organisations" in render_error({"config": {"organisations": {"Chrts": {}}}})
    assert "smtp" in render_error({"config": {"notifications": {"smtp": {"hots": "mail"}}}})
    assert "notifications" in render_error({"config": {"organisations": {"a": {"notifications": {"x": 1}}}}})


# -- labels -------------------------------------------------------------------------------------------


def test_every_object_has_the_standard_labels() -> None:
    objects = render_chart(files=ALL_FEATURES)
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "peach-scheduler"
        assert labels["app.kubernetes.io/instance"] == "peach"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "peach-scheduler-0.1.0"
        assert labels["team"] == "data-platform"  # commonLabels
        assert obj["metadata"]["namespace"] == "data"


def test_selector_labels_are_fixed_and_select_the_pod() -> None:
    default = render_chart()
    other = render_chart(
        {"image": {"tag": "9.9.9"}, "commonLabels": {"tier": "batch"}, "podLabels": {"pod": "label"}}
    )
    for objects in (default, other):
        deployment = one(objects, "Deployment")
        assert deployment["spec"]["selector"]["matchLabels"] == SELECTOR
        assert one(objects, "Service")["spec"]["selector"] == SELECTOR
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert SELECTOR.items() <= pod_labels.items()
    assert one(other, "Deployment")["spec"]["template"]["metadata"]["labels"]["pod"] == "label"


def test_fullname_and_overrides() -> None:
    assert one(render_chart(), "Deployment")["metadata"]["name"] == "peach-peach-scheduler"
    assert one(render_chart(name="peach-scheduler"), "Deployment")["metadata"]["name"] == "peach-scheduler"
    objects = render_chart({"fullnameOverride": "sched"})
    assert {o["metadata"]["name"] for o in objects} == {"sched"}
    assert pod_spec(objects)["volumes"][0]["configMap"]["name"] == "sched"


# -- the Deployment -----------------------------------------------------------------------------------


def test_one_replica_recreate_never_two_schedulers() -> None:
    spec = one(render_chart(files=ALL_FEATURES), "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_probes_hit_the_health_endpoints_on_the_config_port() -> None:
    objects = render_chart({"service": {"targetPort": 9090}})
    c = container(objects)
    assert c["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    assert config(objects)["http"] == {
        "host": ALL_INTERFACES,
        "port": 9090,
        "api_token_env": "PEACH_API_TOKEN",
    }
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # migrations, first checkouts


def test_security_context_non_root_read_only_with_writable_tmp() -> None:
    objects = render_chart()
    pod = pod_spec(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no PEACH_*_PORT variables from Services named peach-*
    c = container(objects)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert env(objects)["HOME"] == "/tmp"
    assert env(objects)["XDG_CACHE_HOME"] == "/var/lib/peach/.cache"  # on the workspace volume


def test_config_workspace_and_hadoop_mounts() -> None:
    objects = render_chart(files=ALL_FEATURES)
    c, pod = container(objects), pod_spec(objects)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert c["args"] == ["peach-scheduler", "run", "--config", "/etc/peach/config.yaml"]
    assert mounts["/etc/peach"]["readOnly"] is True
    assert volumes[mounts["/etc/peach"]["name"]]["configMap"]["name"] == "peach-peach-scheduler"
    assert config(objects)["workspace"] == "/var/lib/peach"
    claim = volumes[mounts["/var/lib/peach"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == one(objects, "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes[mounts["/etc/hadoop/conf"]["name"]]["configMap"]["name"] == "hadoop-client-conf"
    assert env(objects)["HADOOP_CONF_DIR"] == env(objects)["YARN_CONF_DIR"] == "/etc/hadoop/conf"
    assert mounts["/var/run/secrets/peach-git"]["readOnly"] is True  # extraVolumeMounts


def test_no_hadoop_mount_without_a_configmap() -> None:
    objects = render_chart()
    assert "/etc/hadoop/conf" not in {m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert "HADOOP_CONF_DIR" not in env(objects)  # the image's default stays


def test_pvc_by_default_existing_claim_or_emptydir() -> None:
    pvc = one(render_chart(), "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    existing = render_chart({"persistence": {"existingClaim": "mine"}})
    assert not by_kind(existing, "PersistentVolumeClaim")
    workspace = {v["name"]: v for v in pod_spec(existing)["volumes"]}["workspace"]
    assert workspace["persistentVolumeClaim"]["claimName"] == "mine"
    ephemeral = render_chart({"persistence": {"enabled": False}})
    assert not by_kind(ephemeral, "PersistentVolumeClaim")
    assert {v["name"]: v for v in pod_spec(ephemeral)["volumes"]}["workspace"] == {
        "name": "workspace",
        "emptyDir": {},
    }


def test_sqlite_in_the_workspace_by_default_postgresql_from_a_secret() -> None:
    default = render_chart()
    assert config(default)["state_url"] == "sqlite:////var/lib/peach/state.db"
    assert "PEACH_STATE_URL" not in env(default)
    external = render_chart(files=(CHART / "ci" / "external-postgresql-values.yaml",))
    assert "state_url" not in config(external)
    assert env(external)["PEACH_STATE_URL"] == {"secretKeyRef": {"name": "peach-postgresql", "key": "url"}}


def test_secrets_only_by_reference() -> None:
    objects = render_chart(files=ALL_FEATURES)
    variables = env(objects)
    assert variables["PEACH_API_TOKEN"] == {"secretKeyRef": {"name": "peach-api", "key": "token"}}
    assert variables["CHRTS_GIT_TOKEN"] == {"secretKeyRef": {"name": "peach-git", "key": "chrts"}}
    assert variables["SESR_GIT_PASSWORD"] == {"secretKeyRef": {"name": "peach-git", "key": "sesr"}}
    repos = config(objects)["organisations"]["chrts"]["repositories"]
    assert repos == [
        {"url": "https://git.example.org/chrts/tasks.git", "branch": "master", "token_env": "CHRTS_GIT_TOKEN"}
    ]
    assert not by_kind(objects, "Secret")  # the chart never holds a secret itself
    renamed = render_chart({"apiToken": {"existingSecret": "s", "envName": "MY_TOKEN"}})
    assert config(renamed)["http"]["api_token_env"] == "MY_TOKEN"
    assert env(renamed)["MY_TOKEN"] == {"secretKeyRef": {"name": "s", "key": "token"}}


def test_a_credential_variable_nothing_provides_fails_rendering() -> None:
    org = {"repositories": [{"url": "https://git.example.org/x.git", "token_env": "X_TOKEN"}]}
    message = render_error({"config": {"organisations": {"x": org}}})
    assert "X_TOKEN" in message and "gitCredentials" in message
    provided = {"gitCredentials": [{"envName": "X_TOKEN", "existingSecret": "s", "key": "x"}]}
    assert render_chart({"config": {"organisations": {"x": org}}, **provided})


def test_config_changes_reload_and_only_restart_settings_roll_the_pod() -> None:
    objects = render_chart()
    template = one(objects, "Deployment")["spec"]["template"]
    changed = render_chart({"config": {"loops": {"pause": "1m"}, "capacity": {"local_runs": 3}}})
    assert one(changed, "Deployment")["spec"]["template"] == template  # reloaded by the service, no roll
    assert config(changed)["capacity"] == {"local_runs": 3}
    base = checksum(objects)
    assert checksum(render_chart({"persistence": {"mountPath": "/data"}})) != base
    assert checksum(render_chart({"externalDatabase": {"existingSecret": "db"}})) != base
    assert checksum(render_chart({"image": {"tag": "0.2.0"}, "commonLabels": {"a": "b"}})) == base
    mounts = template["spec"]["containers"][0]["volumeMounts"]
    mounted = next(m for m in mounts if m["name"] == "config")
    assert "subPath" not in mounted  # a subPath mount never sees the ConfigMap's updates


def test_termination_grace_matches_the_drain() -> None:
    objects = render_chart({"gracefulStop": {"drainSeconds": 1200, "marginSeconds": 45}})
    assert pod_spec(objects)["terminationGracePeriodSeconds"] == 1245
    assert config(objects)["loops"]["drain"] == "1200s"
    default = render_chart()
    assert pod_spec(default)["terminationGracePeriodSeconds"] == 330
    assert config(default)["loops"] == {
        "timeout": "1h",
        "metadata_timeout": "5m",
        "pause": "30s",
        "metadata_parallel": 1,
        "threads": 64,
        "drain": "300s",
    }
    assert "drain" in render_error({"config": {"loops": {"drain": "10m"}}})  # chart-owned


def test_resources_unset_by_default() -> None:
    assert "resources" not in container(render_chart())
    assert container(render_chart(files=ALL_FEATURES))["resources"]["limits"] == {"memory": "8Gi"}


def test_image_tag_defaults_to_app_version_digest_wins() -> None:
    assert container(render_chart())["image"] == "peach-scheduler:0.1.0"
    digest = "sha256:" + "a" * 64
    assert container(render_chart({"image": {"digest": digest}}))["image"] == f"peach-scheduler@{digest}"


# -- optional objects ---------------------------------------------------------------------------------


def test_optional_objects_absent_by_default() -> None:
    kinds = sorted(o["kind"] for o in render_chart())
    assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "ServiceAccount"]


def test_all_features_scenario_renders_every_optional_object() -> None:
    kinds = sorted(o["kind"] for o in render_chart(files=ALL_FEATURES))
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Ingress",
        "PersistentVolumeClaim",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_ingress_routes_to_the_service() -> None:
    objects = render_chart(files=(CHART / "ci" / "ingress-values.yaml",))
    ingress = one(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["peach.example.org"], "secretName": "peach-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = one(objects, "Service")
    assert backend == {
        "name": service["metadata"]["name"],
        "port": {"number": service["spec"]["ports"][0]["port"]},
    }


def test_service_monitor_scrapes_the_service_port() -> None:
    objects = render_chart(files=ALL_FEATURES)
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["data"]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"


def test_prometheus_rule_ships_the_deploy_rules(tmp_path: Path) -> None:
    deploy_rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    alone = render_chart({"prometheusRule": {"enabled": True}})
    assert one(alone, "PrometheusRule")["spec"] == deploy_rules
    objects = render_chart(files=ALL_FEATURES)
    rule = one(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    # Next to the chart's ServiceMonitor, "scheduler down" matches this release's job and namespace only.
    exact = 'job="peach-peach-scheduler", namespace="data"'
    expected = yaml.safe_load(RULES.read_text(encoding="utf-8").replace('job=~".*peach-scheduler.*"', exact))
    assert rule["spec"] == expected != deploy_rules
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert exprs["PeachSchedulerAbsent"].strip() == f"absent(up{{{exact}}})"
    rendered = tmp_path / "rules.yaml"  # what the operator's Prometheus will load
    rendered.write_text(yaml.safe_dump(rule["spec"]), encoding="utf-8")
    proc = run(tool("promtool"), "check", "rules", rendered)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    extra = {"name": "site", "rules": [{"alert": "X", "expr": "vector(1)"}]}
    more = render_chart({"prometheusRule": {"enabled": True, "additionalGroups": [extra]}})
    assert one(more, "PrometheusRule")["spec"]["groups"][-1] == extra


def test_grafana_dashboard_configmap_for_the_sidecar() -> None:
    objects = render_chart(files=ALL_FEATURES)
    dashboards = [o for o in by_kind(objects, "ConfigMap") if "peach-scheduler.json" in o.get("data", {})]
    assert len(dashboards) == 1
    meta = dashboards[0]["metadata"]
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["annotations"] == {"grafana_folder": "Peach"}
    shipped = json.loads(dashboards[0]["data"]["peach-scheduler.json"])
    assert shipped == json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_chart_files_are_links_to_deploy_not_copies() -> None:
    for name, target in (("peach-scheduler.json", DASHBOARD), ("peach-scheduler-rules.yaml", RULES)):
        path = CHART / "files" / name
        assert path.is_symlink(), f"{path} should link to {target}, not copy it"
        assert path.resolve() == target.resolve()


def test_packaged_chart_carries_the_dashboard_and_rules(tmp_path: Path) -> None:
    """``helm package`` stores the linked files' contents, so a published chart needs no repository."""
    proc = helm("package", CHART, "--destination", tmp_path)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "peach-scheduler-0.1.0.tgz") as archive:
        members = {m.name: m for m in archive.getmembers()}
        for name, source in (("peach-scheduler.json", DASHBOARD), ("peach-scheduler-rules.yaml", RULES)):
            member = members[f"peach-scheduler/files/{name}"]
            assert member.isfile()
            packed = archive.extractfile(member)
            assert packed is not None and packed.read() == source.read_bytes()
        assert not any(name.startswith("peach-scheduler/ci/") for name in members)  # .helmignore


# -- the rendered configuration is what the scheduler accepts -----------------------------------------


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_rendered_config_loads_in_the_scheduler(values: Path | None, tmp_path: Path) -> None:
    """The ConfigMap's file, with the pod's environment (Secrets filled with samples), is a valid
    operator configuration for the scheduler's own loader."""
    config_module = pytest.importorskip("scheduler.config", reason="scheduler.config arrives with issue 3")
    objects = render_chart(files=(values,) if values else ())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config(objects)), encoding="utf-8")
    database = "postgresql+psycopg://peach:secret@db.example.org:5432/peach"
    secrets = {"PEACH_STATE_URL": database}
    environ = {
        name: value if isinstance(value, str) else secrets.get(name, "sample-secret")
        for name, value in env(objects).items()
    }
    loaded = config_module.load_config(path, environ=environ)
    assert str(loaded.workspace) == "/var/lib/peach"
    assert loaded.http.port == 8080 and loaded.http.host == ALL_INTERFACES
    drain = 900 if values and values.name.startswith("all-features") else 300
    assert loaded.loops.drain == drain
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
    if values and values.name.startswith("all-features"):  # notifications, secrets by reference
        assert loaded.notifications.smtp and loaded.notifications.smtp.password(environ) == "sample-secret"
        assert loaded.organisations["chrts"].notifications.secret(environ) == b"sample-secret"
    if "PEACH_STATE_URL" in environ:
        assert loaded.database_url == database
    else:
        assert loaded.database_url == "sqlite:////var/lib/peach/state.db"
