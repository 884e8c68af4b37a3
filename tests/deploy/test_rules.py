"""The SLO rules: valid for promtool, every alert fires and resolves in its unit tests, and the
monitoring overlay's PrometheusRule carries exactly the same groups."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy.manifests import K8S
from tests.deploy.prometheus import RULE_TESTS, RULES, SCRAPE_CONFIG, tool


def promtool(*args: str) -> str:
    done = subprocess.run([tool("promtool"), *args], capture_output=True, text=True)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_rules_and_config_pass_promtool_check() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(RULES))
    assert "SUCCESS" in promtool("check", "config", str(SCRAPE_CONFIG))


def test_every_alert_fires_and_resolves_in_the_unit_tests() -> None:
    promtool("test", "rules", str(RULE_TESTS))
    alerts = {
        r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
        if "alert" in r
    }  # fmt: skip
    fired: set[str] = set()
    resolved: set[str] = set()
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        firing_since: dict[str, int] = {}
        for case in sorted(group.get("alert_rule_test", []), key=lambda c: minutes(c["eval_time"])):
            name, at = case["alertname"], minutes(case["eval_time"])
            if case["exp_alerts"]:
                fired.add(name)
                firing_since.setdefault(name, at)
            elif name in firing_since:
                resolved.add(name)
    assert fired == alerts, f"alerts never seen firing: {sorted(alerts - fired)}"
    assert resolved == alerts, f"alerts never seen resolving: {sorted(alerts - resolved)}"


def minutes(duration: str) -> int:
    assert duration.endswith("m"), f"eval_time in minutes, please: {duration}"
    return int(duration[:-1])


def test_prometheusrule_matches_the_rules_file() -> None:
    rule = yaml.safe_load((K8S / "overlays" / "monitoring" / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    rules_file = yaml.safe_load(RULES.read_text())
    assert rule["spec"]["groups"] == rules_file["groups"], (
        "copy deploy/prometheus-rules.yml's groups into the PrometheusRule"
    )
