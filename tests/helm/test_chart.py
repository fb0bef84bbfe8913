"""Tests of the Helm chart in helm/aurora, without a cluster.

Each value set in tests/helm/values/ (and the defaults) is linted, rendered with `helm template`,
validated against the Kubernetes OpenAPI schemas (kubernetes-validate, offline, strict), and
checked for the properties the chart promises: secure pod settings, secrets only in Secrets, the
probes, the shutdown budget, the wiring between the roles. Two value sets must fail to render.

That the generated master key and node token, and so every pod template, stay the same across
`helm upgrade` needs `lookup` answered: tests/helm/test_upgrade.py renders against a fake API
server for that. Here `lookup` returns nothing, so every render generates fresh values.

Run through scripts/check-helm, or directly: `.venv/bin/pytest tests/helm` with HELM set to a
helm binary (default: .tools/helm/helm, which scripts/install-helm puts there).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "aurora"
VALUES = Path(__file__).resolve().parent / "values"
HELM = os.environ.get("HELM", str(ROOT / ".tools" / "helm" / "helm"))
KUBE_VERSION = os.environ.get("AURORA_KUBE_VERSION", "1.30.0")
RELEASE = "aurora"
NAMESPACE = "aurora"

# The value sets that must render; "default" is the chart's own values.yaml alone.
GOOD_SETS = ["default"] + sorted(
    p.stem for p in VALUES.glob("*.yaml") if not p.stem.startswith("fail-")
)
PROVIDER_ENV = ["OPENAI", "ANTHROPIC", "OPENROUTER", "ZAI", "VLLM"]


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "default" else ["-f", str(VALUES / f"{value_set}.yaml")]


def values_of(value_set: str) -> dict:
    if value_set == "default":
        return {}
    return yaml.safe_load((VALUES / f"{value_set}.yaml").read_text()) or {}


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [HELM, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@functools.lru_cache(maxsize=None)
def render(value_set: str) -> tuple[dict, ...]:
    result = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION, *values_args(value_set),
    )
    assert result.returncode == 0, f"helm template failed for {value_set}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@functools.lru_cache(maxsize=None)
def dry_run_install(value_set: str) -> tuple[tuple[dict, ...], str]:
    """The manifests and NOTES of one client-side dry-run install, rendered together."""
    result = helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
        *values_args(value_set),
    )
    if result.returncode != 0 and "cluster unreachable" in result.stderr:
        # Helm 3 asks the cluster for its version even on a client-side dry run.
        pytest.skip("rendering NOTES without a cluster needs Helm 4 (scripts/install-helm)")
    assert result.returncode == 0, f"helm install --dry-run failed:\n{result.stderr}"
    manifest, sep, notes = result.stdout.partition("\nNOTES:\n")
    assert sep, "no NOTES in the dry-run output"
    manifest = manifest.split("\nMANIFEST:\n", 1)[1]
    return tuple(doc for doc in yaml.safe_load_all(manifest) if doc), notes


def by_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind: str, name_suffix: str = "") -> dict:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def deployment(docs, role: str) -> dict:
    return one(docs, "Deployment", f"-{role}")


def container(dep: dict) -> dict:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(dep: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(dep).get("env", [])}


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are expected"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"expected a duration in seconds, got {duration!r}"
    return int(match.group(1))


def secret_values(docs, value_set: str) -> set[str]:
    """Every secret the chart handles in this render: Secret data, and API keys in the values."""
    found = set()
    for secret in by_kind(docs, "Secret"):
        found |= {base64.b64decode(v).decode() for v in (secret.get("data") or {}).values()}
        found |= set((secret.get("stringData") or {}).values())
    for provider in (values_of(value_set).get("providers") or {}).values():
        if isinstance(provider, dict) and provider.get("apiKey"):
            found.add(provider["apiKey"])
    return {v for v in found if v}


# ---------------------------------------------------------------------------------------------
# Every value set that must render.


@pytest.mark.parametrize("value_set", GOOD_SETS)
def test_lint_is_clean(value_set):
    result = helm("lint", str(CHART), "--strict", *values_args(value_set))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("value_set", GOOD_SETS)
def test_manifests_match_the_kubernetes_schemas(value_set):
    docs = render(value_set)
    assert docs
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            # A CRD kubernetes-validate has no schema for: check the fields Prometheus needs.
            assert doc["kind"] == "ServiceMonitor"
            assert doc["spec"]["selector"]["matchLabels"]
            assert all(e["port"] and e["path"] for e in doc["spec"]["endpoints"])
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {err.message} at {list(err.path)}")
        assert len(doc["metadata"]["name"]) <= 63


@pytest.mark.parametrize("value_set", GOOD_SETS)
def test_pods_run_locked_down(value_set):
    docs = render(value_set)
    deployments = by_kind(docs, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {
        f"{RELEASE}-controlplane", f"{RELEASE}-dataplane"
    }
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        # The volume types the "restricted" Pod Security Standard allows.
        allowed = {"configMap", "emptyDir", "secret", "persistentVolumeClaim", "projected", "downwardAPI"}
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= allowed, volume
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc.get("privileged", False) is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert not sc["capabilities"].get("add"), c["name"]
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", c["name"]
            assert c["resources"]["requests"], c["name"]
            assert all("hostPort" not in port for port in c.get("ports", [])), c["name"]
    for sa in by_kind(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("value_set", GOOD_SETS)
def test_secrets_stay_in_secrets(value_set):
    docs, notes = dry_run_install(value_set)
    secrets = secret_values(docs, value_set)
    if not values_of(value_set).get("existingSecret"):
        assert len(secrets) >= 2, "the chart's Secret should hold a master key and node token"
    elsewhere = [d for d in docs if d["kind"] != "Secret"]
    for secret in secrets:
        assert secret not in notes, "a secret value is printed in NOTES"
        for doc in elsewhere:
            text = yaml.safe_dump(doc)
            assert secret not in text, f"a secret value is in {doc['kind']}/{doc['metadata']['name']}"
    for dep in by_kind(docs, "Deployment"):
        for name, entry in env_of(dep).items():
            if name.endswith(("_KEY", "_TOKEN")) and name not in ("AURORA_TLS_KEY", "AURORA_TLS_CLIENT_KEY"):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name} is not from a Secret"


@pytest.mark.parametrize("value_set", GOOD_SETS)
def test_data_planes_get_only_the_node_token(value_set):
    dp = deployment(render(value_set), "dataplane")
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in env_of(dp).values()
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    # Besides the node token, only the data plane's own egress proxy credentials.
    assert refs - {"HTTPS_PROXY", "HTTP_PROXY"} == {"AURORA_NODE_TOKEN"}
    assert "envFrom" not in container(dp)


@pytest.mark.parametrize("value_set", GOOD_SETS)
def test_control_plane_probes_and_storage(value_set):
    docs = render(value_set)
    cp = deployment(docs, "controlplane")
    c = container(cp)
    assert c["args"] == ["controlplane"]
    tls = values_of(value_set).get("tls", {}).get("enabled")
    for probe in ("startupProbe", "readinessProbe"):
        if tls:
            # The kubelet's gRPC probe cannot speak TLS: the plaintext /healthz beside /metrics.
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, probe
        else:
            assert c[probe]["grpc"] == {"port": 50051}, probe
    # Liveness never follows the store: a full disk makes the pod unready, not restarted.
    if tls:
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    else:
        assert c["livenessProbe"]["grpc"] == {"port": 50051, "service": "aurora.v1.ConfigService"}
    config = one(docs, "ConfigMap", "-controlplane")["data"]
    url = config["AURORA_DATABASE_URL"]
    assert config["AURORA_LOG_FORMAT"] == "json"
    assert url.startswith("sqlite:///var/lib/aurora/")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == "/var/lib/aurora"
    volumes = {v["name"]: v for v in cp["spec"]["template"]["spec"]["volumes"]}
    pvc = one(docs, "PersistentVolumeClaim", "-controlplane")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert cp["spec"]["replicas"] == 1
    assert cp["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("value_set", GOOD_SETS)
def test_data_plane_probes_shutdown_and_cache(value_set):
    dp = deployment(render(value_set), "dataplane")
    pod = dp["spec"]["template"]["spec"]
    c = container(dp)
    env = env_of(dp)
    assert c["args"] == ["dataplane"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert env["AURORA_ADMIN_LISTEN_ADDR"]["value"].endswith(":9090")

    drain = seconds(env["AURORA_SHUTDOWN_DRAIN_DELAY"]["value"])
    grace = seconds(env["AURORA_SHUTDOWN_GRACE"]["value"])
    assert pod["terminationGracePeriodSeconds"] > drain + grace
    # Readiness must notice the draining 503s before the listener closes.
    readiness = c["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= drain

    assert env["AURORA_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    cache = env["AURORA_CONFIG_CACHE"]["value"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    holding = [m for m in c["volumeMounts"] if cache.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(holding) == 1, "AURORA_CONFIG_CACHE must be on exactly one mounted volume"
    assert "emptyDir" in volumes[holding[0]["name"]]
    assert env["AURORA_LOG_FORMAT"]["value"] == "json"


@pytest.mark.parametrize("value_set", GOOD_SETS)
def test_roles_are_wired_together(value_set):
    docs = render(value_set)
    cp, dp = deployment(docs, "controlplane"), deployment(docs, "dataplane")
    cp_labels = cp["spec"]["template"]["metadata"]["labels"]
    dp_labels = dp["spec"]["template"]["metadata"]["labels"]

    cp_svc, dp_svc = one(docs, "Service", "-controlplane"), one(docs, "Service", "-dataplane")
    assert selects({"matchLabels": cp_svc["spec"]["selector"]}, cp_labels)
    assert not selects({"matchLabels": cp_svc["spec"]["selector"]}, dp_labels)
    assert selects({"matchLabels": dp_svc["spec"]["selector"]}, dp_labels)
    assert not selects({"matchLabels": dp_svc["spec"]["selector"]}, cp_labels)
    assert cp_svc["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in dp_svc["spec"]["ports"]] == ["http"], "admin port must stay private"

    tls = values_of(value_set).get("tls", {}).get("enabled", False)
    scheme = "https" if tls else "http"
    grpc_port = next(p["port"] for p in cp_svc["spec"]["ports"] if p["name"] == "grpc")
    expected = f"{scheme}://{cp_svc['metadata']['name']}.{NAMESPACE}.svc:{grpc_port}"
    assert env_of(dp)["AURORA_CONTROL_PLANE_URL"]["value"] == expected

    pdb = one(docs, "PodDisruptionBudget", "-dataplane")
    assert selects(pdb["spec"]["selector"], dp_labels)
    assert not selects(pdb["spec"]["selector"], cp_labels)


# ---------------------------------------------------------------------------------------------
# What each non-default value set turns on.


def test_defaults():
    docs = render("default")
    assert deployment(docs, "dataplane")["spec"]["replicas"] == 2
    assert one(docs, "Service", "-dataplane")["spec"]["type"] == "ClusterIP"
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    assert not by_kind(docs, "NetworkPolicy")
    secret = one(docs, "Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {"AURORA_MASTER_KEY", "AURORA_NODE_TOKEN", "AURORA_ENCRYPTION_KEY"}
    assert all(len(v) >= 32 for v in data.values())
    assert len(data["AURORA_MASTER_KEY"]) == 48, "the generated master key keeps its full length"
    assert len(base64.b64decode(data["AURORA_ENCRYPTION_KEY"])) == 32, "32 random bytes, base64"
    assert data["AURORA_MASTER_KEY"] != data["AURORA_NODE_TOKEN"]
    config = one(docs, "ConfigMap", "-controlplane")["data"]
    assert not any(k.startswith(("ENABLE", "ALLOW_", "OPENAI", "ANTHROPIC")) for k in config), (
        "unset provider values must not reach the control plane (they would override the API)"
    )


def test_hpa_scales_the_data_plane_deployment():
    docs = render("hpa")
    hpa = one(docs, "HorizontalPodAutoscaler")
    dp = deployment(docs, "dataplane")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", "Deployment", dp["metadata"]["name"]
    )
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert "replicas" not in dp["spec"], "the HPA, not the chart, owns the replica count"
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


def test_network_policy_admits_only_data_planes_to_grpc():
    docs = render("networkpolicy")
    policy = one(docs, "NetworkPolicy", "-controlplane")["spec"]
    cp_labels = deployment(docs, "controlplane")["spec"]["template"]["metadata"]["labels"]
    dp_labels = deployment(docs, "dataplane")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["podSelector"], cp_labels)
    assert not selects(policy["podSelector"], dp_labels)
    assert policy["policyTypes"] == ["Ingress"]
    grpc_rules = [r for r in policy["ingress"] if {"port": "grpc", "protocol": "TCP"} in r["ports"]]
    assert len(grpc_rules) == 1
    peers = grpc_rules[0]["from"]
    pod_peers = [p for p in peers if "podSelector" in p]
    assert len(pod_peers) == 1 and "namespaceSelector" not in pod_peers[0]
    assert selects(pod_peers[0]["podSelector"], dp_labels)
    assert not selects(pod_peers[0]["podSelector"], cp_labels)
    # The only other peers are the ones the values add.
    assert [p for p in peers if "podSelector" not in p] == values_of("networkpolicy")[
        "networkPolicy"]["adminFrom"]
    for rule in policy["ingress"]:
        assert rule["from"], "a rule without peers would admit everyone"
    assert len(by_kind(docs, "ServiceMonitor")) == 2


def test_network_policy_admits_traffic_and_only_listed_scrapers_to_data_planes():
    docs = render("networkpolicy")
    policy = one(docs, "NetworkPolicy", "-dataplane")["spec"]
    cp_labels = deployment(docs, "controlplane")["spec"]["template"]["metadata"]["labels"]
    dp_labels = deployment(docs, "dataplane")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["podSelector"], dp_labels)
    assert not selects(policy["podSelector"], cp_labels)
    assert policy["policyTypes"] == ["Ingress"]
    rules = {tuple(p["port"] for p in r["ports"]): r for r in policy["ingress"]}
    assert set(rules) == {("http",), ("admin",)}
    # trafficFrom is empty here: the gateway's clients may come from anywhere.
    assert "from" not in rules[("http",)]
    assert rules[("admin",)]["from"] == values_of("networkpolicy")["networkPolicy"]["metricsFrom"]
    ports = {p["name"] for p in container(deployment(docs, "dataplane"))["ports"]}
    assert {"http", "admin"} <= ports, "the policy names ports the container does not have"


def test_network_policy_traffic_from_restricts_the_traffic_port():
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}
    result = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--set", "networkPolicy.enabled=true",
        "--set-json", f"networkPolicy.trafficFrom=[{json.dumps(peer)}]",
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    policy = one(docs, "NetworkPolicy", "-dataplane")["spec"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}], "from": [peer]}]


@pytest.mark.parametrize(
    ("args", "policy"),
    [
        ([], "Always"),
        (["--set", "image.digest=sha256:" + "0" * 64], "IfNotPresent"),
        (["--set", "image.pullPolicy=IfNotPresent"], "IfNotPresent"),
    ],
)
def test_pull_policy_follows_the_pin(args, policy):
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    for role in ("controlplane", "dataplane"):
        assert container(deployment(docs, role))["imagePullPolicy"] == policy


def test_both_roles_have_cpu_and_memory_limits_by_default():
    docs = render("default")
    for role in ("controlplane", "dataplane"):
        limits = container(deployment(docs, role))["resources"]["limits"]
        assert {"cpu", "memory"} <= set(limits), f"{role} has no {'cpu' if 'memory' in limits else 'memory'} limit"


@pytest.mark.parametrize("value_set", GOOD_SETS)
def test_the_encryption_key_reaches_only_the_control_plane_as_a_file(value_set):
    docs = render(value_set)
    cp, dp = deployment(docs, "controlplane"), deployment(docs, "dataplane")
    assert env_of(cp)["AURORA_ENCRYPTION_KEY_FILE"]["value"] == "/etc/aurora/encryption/encryption-key"
    assert "AURORA_ENCRYPTION_KEY" not in env_of(cp), "the key is a file, not a variable"
    volume = next(v for v in cp["spec"]["template"]["spec"]["volumes"] if v["name"] == "encryption-key")
    assert volume["secret"]["items"] == [{"key": "AURORA_ENCRYPTION_KEY", "path": "encryption-key"}]
    assert volume["secret"]["defaultMode"] == 0o400
    mounts = {m["name"]: m for m in container(cp)["volumeMounts"]}
    assert mounts["encryption-key"]["mountPath"] == "/etc/aurora/encryption" and mounts["encryption-key"]["readOnly"]
    assert "encryption-key" not in {v["name"] for v in dp["spec"]["template"]["spec"].get("volumes", [])}
    assert not any("ENCRYPTION" in name for name in env_of(dp))


def test_existing_secret_is_used_and_none_is_created():
    docs = render("existing-secret")
    assert not by_kind(docs, "Secret")
    for dep in by_kind(docs, "Deployment"):
        for entry in env_of(dep).values():
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "aurora-credentials"
                # Provider credentials may be absent; the master key and node token may not.
                assert ref.get("optional", False) == ref["key"].endswith("_API_KEY")
    config = one(docs, "ConfigMap", "-controlplane")["data"]
    assert config["ENABLED_PASSTHROUGH_PROVIDERS"] == "anthropic,openai"
    assert config["ANTHROPIC_BASE_URL"] == "https://api.anthropic.com/v1"


def test_tls_mounts_certificates_and_keeps_keys_apart():
    docs = render("tls")
    cp, dp = deployment(docs, "controlplane"), deployment(docs, "dataplane")
    cp_env, dp_env = env_of(cp), env_of(dp)

    def volume_for(dep, path):
        mount = next(m for m in container(dep)["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        return volume["secret"]

    for var in ("AURORA_TLS_CERT", "AURORA_TLS_KEY", "AURORA_TLS_CLIENT_CA"):
        assert volume_for(cp, cp_env[var]["value"])["secretName"] == "aurora-controlplane-tls"
    ca = volume_for(dp, dp_env["AURORA_TLS_CA"]["value"])
    assert ca["secretName"] == "aurora-controlplane-tls"
    assert [i["key"] for i in ca["items"]] == ["ca.crt"], "data planes must not see the server key"
    for var in ("AURORA_TLS_CLIENT_CERT", "AURORA_TLS_CLIENT_KEY"):
        assert volume_for(dp, dp_env[var]["value"])["secretName"] == "aurora-dataplane-tls"
    assert dp_env["AURORA_CONTROL_PLANE_URL"]["value"].startswith("https://")


def test_egress_proxy_and_upstream_ca_reach_the_data_plane():
    dp = deployment(render("egress"), "dataplane")
    env = env_of(dp)
    for var in ("HTTPS_PROXY", "HTTP_PROXY"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"], ref["optional"]) == ("aurora-egress-proxy", var, True)
    assert env["NO_PROXY"]["value"].startswith("localhost,127.0.0.1,")
    ca_file = env["AURORA_UPSTREAM_CA_FILE"]["value"]
    mount = next(m for m in container(dp)["volumeMounts"] if ca_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in dp["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "corporate-ca"
    assert volume["configMap"]["items"] == [{"key": "ca-bundle.pem", "path": ca_file.rsplit("/", 1)[1]}]

    default = env_of(deployment(render("default"), "dataplane"))
    assert not {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "AURORA_UPSTREAM_CA_FILE"} & set(default)


def test_load_balancer_service():
    svc = one(render("loadbalancer"), "Service", "-dataplane")["spec"]
    assert svc["type"] == "LoadBalancer"
    assert svc["externalTrafficPolicy"] == "Local"
    assert svc["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert svc["ports"][0]["port"] == 443


def test_provider_settings_reach_only_the_control_plane():
    docs = render("providers")
    config = one(docs, "ConfigMap", "-controlplane")["data"]
    assert config["ENABLE_PASSTHROUGH_ROUTES"] == "true"
    assert config["ALLOW_PASSTHROUGH_V1_ALIAS"] == "false"
    assert config["ENABLED_PASSTHROUGH_PROVIDERS"] == "openai,anthropic,vllm"
    assert config["VLLM_BASE_URL"] == "http://vllm.inference.svc:8000/v1"
    secret = one(docs, "Secret")["data"]
    assert base64.b64decode(secret["OPENAI_API_KEY"]).decode() == "sk-canary-openai-5b1c0de"
    assert "ZAI_API_KEY" not in secret
    dp = deployment(docs, "dataplane")
    assert dp["spec"]["replicas"] == 4
    assert dp["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 10 + 300 + 10
    assert container(dp)["image"] == "registry.example.com/platform/aurora:0.1.0"


# ---------------------------------------------------------------------------------------------
# Value sets that must be refused.


def test_two_control_planes_on_sqlite_are_refused():
    result = helm("template", RELEASE, str(CHART), "-f", str(VALUES / "fail-replicas-sqlite.yaml"))
    assert result.returncode != 0
    assert "controlplane.replicaCount=2 is not supported with SQLite" in result.stderr


def test_two_control_planes_on_a_shared_database_are_allowed():
    result = helm(
        "template", RELEASE, str(CHART), "--set", "controlplane.replicaCount=3",
        "--set", "controlplane.database.existingSecret=aurora-database",
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    cp = deployment(docs, "controlplane")
    assert cp["spec"]["replicas"] == 3
    assert "strategy" not in cp["spec"], "rolling updates: replicas replace each other"
    assert not by_kind(docs, "PersistentVolumeClaim")
    # The URL (with its password) comes from the Secret only.
    assert env_of(cp)["AURORA_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "aurora-database", "key": "AURORA_DATABASE_URL",
    }
    assert "AURORA_DATABASE_URL" not in one(docs, "ConfigMap", "-controlplane")["data"]
    pdb = one(docs, "PodDisruptionBudget", "-controlplane")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert selects(pdb["spec"]["selector"], cp["spec"]["template"]["metadata"]["labels"])
    spread = cp["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread:
        assert selects(constraint["labelSelector"], cp["spec"]["template"]["metadata"]["labels"])
    # Every data plane points at the Service, which spreads their streams over the replicas.
    url = env_of(deployment(docs, "dataplane"))["AURORA_CONTROL_PLANE_URL"]["value"]
    assert url == "http://aurora-controlplane.default.svc:50051"


def test_a_postgres_url_in_a_config_map_is_refused():
    result = helm(
        "template", RELEASE, str(CHART), "--set", "controlplane.database.url=postgres://aurora:pw@db/aurora",
    )
    assert result.returncode != 0
    assert "would land in a ConfigMap" in result.stderr
    assert "pw@" not in result.stderr


def test_one_control_plane_has_no_disruption_budget():
    assert not [d for d in by_kind(render("default"), "PodDisruptionBudget") if "controlplane" in d["metadata"]["name"]]


@pytest.mark.parametrize(
    "args",
    [
        ["-f", str(VALUES / "fail-schema.yaml")],
        ["--set", "dataplane.replicas=3"],  # a misspelt key
        ["--set", "dataplane.service.type=Loadbalancer"],  # a misspelt enum value
        ["--set-string", "networkPolicy.enabled=yes"],
    ],
    ids=["string-for-integer", "unknown-key", "bad-service-type", "string-for-boolean"],
)
def test_schema_rejects_mistyped_values(args):
    result = helm("template", RELEASE, str(CHART), *args)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_tls_without_a_secret_is_refused():
    result = helm("template", RELEASE, str(CHART), "--set", "tls.enabled=true")
    assert result.returncode != 0
    assert "tls.enabled=true needs tls.secretName" in result.stderr


# ---------------------------------------------------------------------------------------------
# The chart's README documents every value.


def leaf_values(values: dict, prefix: str = "") -> list[str]:
    """Dotted paths of values.yaml; free-form maps count as one value."""
    opaque = {"podSecurityContext", "securityContext", "controlplane.resources", "dataplane.resources"}
    paths = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and path not in opaque:
            paths += leaf_values(value, path)
        else:
            paths.append(path)
    return paths


def test_readme_documents_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text().split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    missing = [p for p in leaf_values(values) if p not in rows]
    assert not missing, f"values missing from the README's table: {missing}"
    stale = sorted(rows - set(leaf_values(values)))
    assert not stale, f"README documents values that do not exist: {stale}"
