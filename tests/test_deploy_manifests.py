"""The Kubernetes manifests: they parse, set only real settings, and run real commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cli.main import main as cli
from shared.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return docs


def _containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for d in docs:
        spec = d.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        out += pod.get("containers", [])
    return out


def test_every_resource_listed_in_kustomization_parses() -> None:
    kinds = {d["kind"] for d in _documents()}
    assert {
        "Deployment",
        "Service",
        "Job",
        "ConfigMap",
        "Secret",
        "HorizontalPodAutoscaler",
    } <= kinds


def test_manifests_set_only_real_settings() -> None:
    known = {name.upper() for name in Settings.model_fields}
    docs = _documents()
    names = set()
    for d in docs:
        if d["kind"] in ("ConfigMap", "Secret"):
            names |= set(d.get("data", {})) | set(d.get("stringData", {}))
    for c in _containers(docs):
        names |= {e["name"] for e in c.get("env", [])}
    assert names and names <= known, names - known


def test_each_container_runs_a_filecdn_command() -> None:
    commands = set(cli.commands)
    args = [c["args"][0] for c in _containers(_documents())]
    assert sorted(args) == ["api", "edge", "migrate", "worker"]
    assert set(args) <= commands


def test_api_and_edge_bind_all_interfaces_in_the_cluster() -> None:
    config = next(d for d in _documents() if d["kind"] == "ConfigMap")["data"]
    assert config["API_HOST"] == config["EDGE_HOST"] == "0.0.0.0"
