"""The chart as a whole: helm lint --strict, every object valid against the Kubernetes schemas, the
generated files current, the values schema enforced."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from goblin_tools import deploy_tools
from tests.deploy.manifests import PROFILES, parse

# Custom resources kubernetes-validate has no schema for; checked by the tests that make them.
CRDS = {
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_helm_lint_strict(helm_bin: str, profile: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(PROFILES[profile], f)
        f.flush()
        result = deploy_tools.helm("lint", "--strict", str(deploy_tools.CHART_DIR), "-f", f.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_object_is_valid_kubernetes(rendered: dict, profile: str) -> None:
    objects = rendered[profile]
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        # strict: an unknown or misspelt field is an error, not a silently ignored key
        kubernetes_validate.validate(obj, deploy_tools.KUBERNETES_VERSION, strict=True)


def test_rendered_manifests_pass_the_kubernetes_validate_cli() -> None:
    """deploy/k8s/ as an operator would check it: the CLI, strict, against the same Kubernetes version."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "kubernetes-validate"),
            "--strict",
            "--quiet",
            "-k",
            deploy_tools.KUBERNETES_VERSION,
            str(deploy_tools.RENDERED_FILE),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_is_current() -> None:
    assert deploy_tools.SCHEMA_FILE.read_text() == deploy_tools.schema_text(), (
        "values.schema.json is stale: run `make render`"
    )


def test_deploy_k8s_is_current(helm_bin: str) -> None:
    assert deploy_tools.RENDERED_FILE.read_text() == deploy_tools.rendered_text(), (
        "deploy/k8s/goblin.yaml is stale: run `make render`"
    )


def test_deploy_k8s_is_the_default_profile_without_test_pods(rendered: dict) -> None:
    on_disk = parse(deploy_tools.RENDERED_FILE.read_text())
    without_tests = [
        o for o in rendered["default"] if o["metadata"].get("annotations", {}).get("helm.sh/hook") != "test"
    ]
    assert on_disk == without_tests


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bogus": 1}, "additional properties 'bogus' not allowed"),
        ({"environment": "staging"}, "value must be one of"),
        ({"services": {"gateway": {"replicas": "two"}}}, "got string, want integer"),
        ({"config": {"DATABASE_URL": "postgresql://u:p@h/db"}}, "config.DATABASE_URL is a secret"),
        ({"config": {"OPENAI_API_KEY": "sk-x"}}, "config.OPENAI_API_KEY is a secret"),
        ({"ingress": {"enabled": True}}, "ingress.enabled needs ingress.hosts or publicHost"),
        ({"postgresql": {"enabled": True}}, "postgresql.auth.password is required"),
    ],
)
def test_bad_values_are_refused(helm_bin: str, values: dict, message: str) -> None:
    with pytest.raises(deploy_tools.ToolError) as excinfo:
        deploy_tools.template(values)
    assert message in str(excinfo.value)


def test_observability_files_are_loaded_only_behind_their_flags(rendered: dict) -> None:
    """The rules and dashboards are the observability work's files; the chart ships none of its own
    (no dummy), and loads whatever is there only when asked."""
    chart = deploy_tools.CHART_DIR
    dashboards = sorted((chart / "dashboards").glob("*.json")) if (chart / "dashboards").is_dir() else []
    rules = sorted((chart / "rules").glob("*.yaml")) if (chart / "rules").is_dir() else []
    default_kinds = {o["kind"] for o in rendered["default"]}
    assert not default_kinds & {"ServiceMonitor", "PrometheusRule"}
    trial = rendered["trial"]
    dashboard_maps = [o for o in trial if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(dashboard_maps) == len(dashboards)
    assert sum(o["kind"] == "PrometheusRule" for o in trial) == (1 if rules else 0)
    assert sum(o["kind"] == "ServiceMonitor" for o in trial) == 1
