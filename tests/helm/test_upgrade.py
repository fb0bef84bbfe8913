"""`helm install` then `helm upgrade` with the same values must change no pod template.

The chart reads its generated master key and node token back with `lookup`, which needs a
cluster. `helm template --dry-run=server` renders as install and upgrade do, lookups included,
against tests/helm/fake_apiserver.py: first with nothing in the "cluster" (the first install),
then with the Secret that install created (the upgrade after it). Any difference between the
two renders' pod templates would roll every pod, the control plane's with a Recreate outage.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from fake_apiserver import FakeApiServer

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "aurora"
VALUES = Path(__file__).resolve().parent / "values"
HELM = os.environ.get("HELM", str(ROOT / ".tools" / "helm" / "helm"))
RELEASE = "aurora"
NAMESPACE = "aurora"
SECRET_PATH = f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}"

# Value sets whose pods track the chart's own Secret (existing-secret has none to track).
SETS = ["default", "providers", "tls", "hpa"]


def render_against(api: FakeApiServer, value_set: str) -> list[dict]:
    args = [] if value_set == "default" else ["-f", str(VALUES / f"{value_set}.yaml")]
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "KUBECONFIG": str(api.kubeconfig(Path(home), NAMESPACE)),
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
        }
        # The OpenAPI validation the server would do is scripts/check-helm's job (offline).
        result = subprocess.run(
            [HELM, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
             "--dry-run=server", "--disable-openapi-validation", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )
    assert result.returncode == 0, f"helm template --dry-run=server failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"]["template"] for d in of_kind(docs, "Deployment")}


def install_then_upgrade(value_set: str, change_stored=None) -> tuple[list[dict], list[dict], FakeApiServer]:
    with FakeApiServer() as api:
        install = render_against(api, value_set)
        assert SECRET_PATH in api.requests, "the chart did not look its Secret up"
        (secret,) = of_kind(install, "Secret")
        stored = dict(secret)
        if change_stored:
            stored = change_stored(stored)
        api.put(stored, "secrets", RELEASE)
        upgrade = render_against(api, value_set)
    return install, upgrade, api


@pytest.mark.parametrize("value_set", SETS)
def test_first_upgrade_changes_no_pod_template(value_set):
    install, upgrade, _ = install_then_upgrade(value_set)
    # The upgrade read the generated values back instead of drawing new ones.
    assert of_kind(upgrade, "Secret")[0]["data"] == of_kind(install, "Secret")[0]["data"]
    before, after = pod_templates(install), pod_templates(upgrade)
    assert set(before) == {f"{RELEASE}-controlplane", f"{RELEASE}-dataplane"}
    for name in before:
        annotations = before[name]["metadata"].get("annotations", {})
        assert "checksum/secret" in annotations, f"{name} does not track the Secret"
        assert after[name] == before[name], f"helm upgrade with the same values would restart {name}"


def test_both_roles_track_the_same_secret_contents():
    install, _, _ = install_then_upgrade("default")
    checksums = {t["metadata"]["annotations"]["checksum/secret"] for t in pod_templates(install).values()}
    assert len(checksums) == 1, "the two Deployments disagree on what the Secret holds"


def test_a_rotated_secret_restarts_the_pods_on_upgrade():
    """README.md, Secrets: change a value in the Secret, run helm upgrade, the pods restart."""

    def rotate(secret: dict) -> dict:
        data = dict(secret["data"])
        data["AURORA_NODE_TOKEN"] = base64.b64encode(b"rotated-node-token-0123456789").decode()
        return {**secret, "data": data}

    install, upgrade, _ = install_then_upgrade("default", rotate)
    assert base64.b64decode(of_kind(upgrade, "Secret")[0]["data"]["AURORA_NODE_TOKEN"]) == b"rotated-node-token-0123456789"
    before, after = pod_templates(install), pod_templates(upgrade)
    for name in before:
        assert (
            after[name]["metadata"]["annotations"]["checksum/secret"]
            != before[name]["metadata"]["annotations"]["checksum/secret"]
        ), f"{name} would keep running with the old secret"


def test_a_new_provider_key_restarts_the_control_plane():
    with FakeApiServer() as api:
        install = render_against(api, "default")
        api.put(of_kind(install, "Secret")[0], "secrets", RELEASE)
        upgrade = render_against(api, "providers")
    assert "OPENAI_API_KEY" in of_kind(upgrade, "Secret")[0]["data"]
    cp = f"{RELEASE}-controlplane"
    assert (
        pod_templates(upgrade)[cp]["metadata"]["annotations"]["checksum/secret"]
        != pod_templates(install)[cp]["metadata"]["annotations"]["checksum/secret"]
    )
