"""Just enough of a Kubernetes API server for `helm template --dry-run=server`.

With --dry-run=server Helm renders against a cluster: it reads the server's version and API
discovery, answers the chart's `lookup` calls with GETs, and checks each rendered object for an
existing one. This server answers those from memory (discovery for the kinds the chart renders,
and the objects a test puts in `objects`) and 404s everything else, so a test can render a first
install (nothing there) and then the upgrade that follows it (the install's Secret there) without
a cluster. Every request path is recorded in `requests`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

KUBE_VERSION = ("1", "30")

# group/version -> (resource, kind) for every kind the chart can render.
RESOURCES = {
    "v1": [
        ("secrets", "Secret"),
        ("configmaps", "ConfigMap"),
        ("services", "Service"),
        ("serviceaccounts", "ServiceAccount"),
        ("persistentvolumeclaims", "PersistentVolumeClaim"),
    ],
    "apps/v1": [("deployments", "Deployment")],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget")],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy")],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor")],
}


def object_path(api_version: str, resource: str, namespace: str, name: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{resource}/{name}"


def not_found() -> tuple[int, dict]:
    return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}


class FakeApiServer:
    """A threaded fake API server on 127.0.0.1 (port 0); use as a context manager."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def put(self, obj: dict, resource: str, release: str) -> None:
        """Store an object as `helm install` of `release` leaves it (GET returns it): with the
        ownership annotations Helm checks before it adopts an existing object."""
        meta = {**obj["metadata"]}
        meta["annotations"] = {
            **meta.get("annotations", {}),
            "meta.helm.sh/release-name": release,
            "meta.helm.sh/release-namespace": meta["namespace"],
        }
        path = object_path(obj["apiVersion"], resource, meta["namespace"], meta["name"])
        self.objects[path] = {**obj, "metadata": meta}

    def kubeconfig(self, directory: Path, namespace: str) -> Path:
        host, port = self._server.server_address[:2]
        path = directory / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://{host}:{port}"}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }))
        return path

    def __enter__(self) -> "FakeApiServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str) -> tuple[int, dict]:
        if path == "/version":
            major, minor = KUBE_VERSION
            return 200, {"major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = []
            for gv in RESOURCES:
                if "/" in gv:
                    group, version = gv.split("/")
                    entry = {"groupVersion": gv, "version": version}
                    groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        gv = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
        if gv in RESOURCES:
            return 200, {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": gv,
                "resources": [
                    {"name": name, "singularName": "", "namespaced": True, "kind": kind,
                     "verbs": ["get", "list", "create", "update", "patch", "delete"]}
                    for name, kind in RESOURCES[gv]
                ],
            }
        if path in self.objects:
            return 200, self.objects[path]
        return not_found()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                status, body = server.answer(path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
                pass

        return Handler
