"""The chart's alert rules (deploy/helm/goblin/rules/*.yaml) are valid, proven and documented.

- ``promtool check rules`` accepts every file (expressions parse, annotation templates parse);
- ``promtool test rules`` runs rules_test.yaml: synthetic series that fire each alert (each severity)
  and series that must not;
- rules_test.yaml covers every alert and severity both ways, so a new rule cannot land untested;
- every rule has a severity and a runbook link to a section of docs/runbook.md that exists;
- the chart renders them, templates intact, into one PrometheusRule.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from goblin_tools import deploy_tools
from tests.deploy.manifests import parse
from tests.observability.obsdash_support import helm_fixture, promtool_fixture  # noqa: F401 (fixtures)

RULES_DIR = deploy_tools.CHART_DIR / "rules"
RUNBOOK = deploy_tools.ROOT / "docs" / "runbook.md"
UNIT_TESTS = Path(__file__).with_name("rules_test.yaml")


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yaml"))


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of every file, in order."""
    rules = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [rule for rule in group["rules"] if "alert" in rule]
    return rules


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def run(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_there_are_rules() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {"HighErrorRate", "SlowResponseTime", "ServiceDown", "HighChatCompletionErrors"} <= names


def test_promtool_accepts_every_rule_file(promtool_bin: str) -> None:
    result = run(promtool_bin, "check", "rules", *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool_bin: str, tmp_path: Path) -> None:
    """rules_test.yaml against the chart's rules, copied with their annotations removed: promtool
    compares annotations verbatim, which would make every test restate every description."""
    (tmp_path / "rules").mkdir()
    for path in rule_files():
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        (tmp_path / "rules" / path.name).write_text(yaml.safe_dump(document))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = run(promtool_bin, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_fire_and_spare_every_alert_and_severity() -> None:
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fired = {(case["alertname"], alert["exp_labels"]["severity"]) for case in cases for alert in case["exp_alerts"]}
    spared = {case["alertname"] for case in cases if not case["exp_alerts"]}
    rules = {(rule["alert"], rule["labels"]["severity"]) for rule in alert_rules()}
    assert rules - fired == set(), "alerts (and severities) no unit test fires"
    assert {name for name, _ in rules} - spared == set(), "alerts no unit test shows staying quiet"
    assert fired - rules == set(), "unit tests of alerts that do not exist"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    headings = re.findall(r"^#{2,3} (.+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.M)
    anchors = {github_anchor(h) for h in headings}
    problems = []
    for rule in alert_rules():
        name, annotations = rule["alert"], rule.get("annotations", {})
        if rule.get("labels", {}).get("severity") not in {"warning", "critical"}:
            problems.append(f"{name}: severity must be warning or critical")
        if not annotations.get("summary"):
            problems.append(f"{name}: no summary")
        link = annotations.get("runbook_url", "")
        path, _, anchor = link.partition("#")
        if path != "docs/runbook.md" or anchor not in anchors:
            problems.append(f"{name}: runbook_url {link!r} is not a section of docs/runbook.md")
    assert not problems, problems


def test_every_alert_name_has_its_own_runbook_section() -> None:
    """One section per alert: the runbook link of an alert lands on text about that alert."""
    text = RUNBOOK.read_text(encoding="utf-8")
    for rule in alert_rules():
        assert re.search(rf"^#{{2,3}} .*\b{rule['alert']}\b", text, flags=re.M), rule["alert"]


def test_the_chart_renders_the_rules_into_one_prometheus_rule(helm_bin: str) -> None:
    objects = parse(deploy_tools.template({"metrics": {"prometheusRule": {"enabled": True}}}))
    [rule] = [o for o in objects if o["kind"] == "PrometheusRule"]
    expected = [group for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]]
    # Byte for byte the same groups: helm must neither template nor reflow the {{ $value }} annotations.
    assert rule["spec"]["groups"] == expected
