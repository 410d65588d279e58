"""The optional monitoring component (k8s/monitoring): its ServiceMonitor and
PrometheusRule, against the manifests they watch and against the metrics the
real server exports; test_dashboard.py checks its Grafana dashboard and
docs/metrics.md.

The list of metrics is not written down here: the `exported` fixture
(conftest.py) scrapes the real server once. This module checks that scrape,
and the PromQL checker (promql.py) that reads every alert expression against
it; then the rendered component: its objects, the CRD fields of the
ServiceMonitor and PrometheusRule, the scrape path from the ServiceMonitor to
the server's metrics_address, the alerts (complete, on the metrics the issue
asks for, selecting the deployed job and container, using only labels their
result keeps). Also the inflight HPA's metric, which the server exports."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from deploy import (
    MONITORED,
    MONITORING,
    ROOT,
    container_port,
    effective_setting,
    host_of,
    labels_match,
    one,
    port_of,
    render,
    server_container,
)
from exposition import FEATURE_METRICS
from promql import (
    check_expr,
    literal_matchers,
    output_labels,
    parsed_metric_names,
    promql_parser,
    scan,
)

MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


# --- the server's metrics ---------------------------------------------------


def test_the_scrape_has_what_the_checks_rely_on(exported):
    """Sanity of the list the other checks use: every family described, the
    families of server/metrics/catalog.rs there, and the requests sent
    counted."""
    assert exported.types, "no # TYPE lines in /metrics"
    undescribed = set(exported.types) - exported.helps
    assert not undescribed, f"families without # HELP: {sorted(undescribed)}"
    for name in exported.labels:
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in exported.types or family in exported.types, f"{name} has no # TYPE"
    oxserve = {f for f in exported.types if f.startswith("oxserve_")}
    source = (ROOT / "server" / "metrics" / "catalog.rs").read_text()
    declared = set(re.findall(r'pub(?:\(crate\))? const \w+: &str = "(oxserve_\w+)";', source))
    declared -= FEATURE_METRICS
    assert declared and oxserve == declared, (
        f"server/metrics/catalog.rs declares {sorted(declared)}, /metrics shows {sorted(oxserve)}"
    )
    assert exported.values[("oxserve_requests_total", "code")] >= {"OK", "INVALID_ARGUMENT"}
    assert exported.values[("oxserve_model_state", "state")] == {"loading", "ready", "failed", "unloaded"}
    assert any(f.startswith("process_") for f in exported.types)


# --- the PromQL check -------------------------------------------------------


@pytest.mark.parametrize(
    "expr, problem",
    [
        ("rate(oxserve_requests_total[5m])", None),
        ('sum by (model) (rate(oxserve_requests_total{code!="OK"}[$__rate_interval]))', None),
        ("rate(oxserve_request_total[5m])", "not a metric"),
        ("rate(oxserve_request_duration_seconds[5m])", "a histogram"),
        ("oxserve_requests_total", "without rate"),
        ("rate(oxserve_pending_requests[5m])", "gauge oxserve_pending_requests read with rate"),
        ('oxserve_model_state{state="broken"}', "never has"),
        ('sum(rate(oxserve_requests_total{code=~"OK|NOPE"}[5m]))', "never has"),
        ('oxserve_pending_requests{modle="x"}', "no label 'modle'"),
        ("sum by (status) (oxserve_pending_requests)", "no metric here has ['status']"),
        ("histogram_quantile(0.9, sum by (model) (rate(oxserve_queue_duration_seconds_bucket[5m])))",
         "loses le"),
        ("histogram_quantile(0.9, rate(oxserve_queue_duration_seconds_sum[5m]))", "not _bucket"),
        ("histogram_quantil(0.9, x)", "unknown function"),
        ("sum(rate(oxserve_requests_total[5m])", "unclosed"),
        ('{__name__="oxserve_pending_requests"}', None),
        ('sum by (pod) (kube_pod_container_status_restarts_total{container="oxserve"})', "without rate"),
        ('max(up{job="oxserve"}) # a comment naming no_such_metric', None),
        ('label_replace(oxserve_pending_requests, "m", "$1", "model", "(.*)")', None),
    ],
)
def test_the_promql_check_catches_mistakes(exported, expr, problem):
    problems = check_expr(expr, exported)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


# --- the rendered component ---------------------------------------------------


def monitoring_objects(objects):
    return [
        o for o in objects
        if o["kind"] in ("ServiceMonitor", "PrometheusRule")
        or (o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard"))
    ]


def rule_file(objects) -> dict:
    return one(objects, "PrometheusRule")


def alerting_rules(objects) -> list[dict]:
    return [r for g in rule_file(objects)["spec"]["groups"] for r in g["rules"] if "alert" in r]


def all_rules(objects) -> list[dict]:
    return [r for g in rule_file(objects)["spec"]["groups"] for r in g["rules"]]


@pytest.mark.parametrize("rendering", MONITORED)
def test_component_only_adds_the_monitoring_objects(rendering):
    """The component renders from an overlay, adds a ServiceMonitor, a
    PrometheusRule and the dashboard ConfigMap, in the overlay's namespace,
    and leaves every other object as the overlay has it."""
    overlay = rendering.split("+")[0]
    with_component, without = render(rendering), render(overlay)
    added = monitoring_objects(with_component)
    assert sorted(o["kind"] for o in added) == sorted(MONITORING_KINDS)
    rest = [o for o in with_component if o not in added]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(rest, key=key) == sorted(without, key=key)
    namespace = one(without, "Deployment")["metadata"]["namespace"]
    for o in added:
        assert o["metadata"].get("namespace") == namespace, f"{o['kind']} not in {namespace}"


def test_component_is_a_kustomize_component():
    k = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert k["kind"] == "Component"
    files = [f for g in k.get("configMapGenerator", []) for f in g.get("files", [])]
    assert "dashboards/oxserve.json" in files


DURATION = {"type": "string", "pattern": r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"},
                   "labels": STRING_MAP, "annotations": STRING_MAP},
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}},
}
# From the Prometheus Operator CRDs (monitoring.coreos.com/v1), stricter in
# that unknown fields are errors: the API server would prune them silently.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "sampleLimit": {"type": "integer"},
                "attachMetadata": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "params": {"type": "object"},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            "trackTimestampsStaleness": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                            "tlsConfig": {"type": "object"},
                            "authorization": {"type": "object"},
                            "basicAuth": {"type": "object"},
                            "bearerTokenSecret": {"type": "object"},
                            "oauth2": {"type": "object"},
                            "proxyUrl": {"type": "string"},
                            "followRedirects": {"type": "boolean"},
                            "enableHttp2": {"type": "boolean"},
                            "filterRunning": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]*$"},
        "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "query_offset": DURATION,
                            "limit": {"type": "integer"},
                            "labels": STRING_MAP,
                            "partial_response_strategy": {"type": "string"},
                            "rules": {"type": "array", "minItems": 1, "items": RULE},
                        },
                    },
                },
            },
        },
    },
}


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


def test_service_monitor_follows_the_crd(monitored):
    jsonschema.validate(one(monitored, "ServiceMonitor"), SERVICE_MONITOR)


def test_service_monitor_scrapes_the_metrics_port(monitored):
    """ServiceMonitor -> Service (labels, namespace) -> port "metrics" ->
    container port 8002 -> the server's metrics_address, with metrics on."""
    monitor = one(monitored, "ServiceMonitor")
    service = one(monitored, "Service")
    spec = monitor["spec"]
    assert labels_match(spec["selector"], service["metadata"].get("labels", {})), (
        "the ServiceMonitor's selector does not match the Service's labels"
    )
    names = spec.get("namespaceSelector", {}).get("matchNames", [monitor["metadata"]["namespace"]])
    assert service["metadata"]["namespace"] in names
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    container = server_container(monitored)
    metrics_port = container_port(container, "metrics")
    assert metrics_port == 8002
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in ports, f"the Service has no port named {endpoint['port']}"
        target = ports[endpoint["port"]]["targetPort"]
        assert target in ("metrics", metrics_port), f"port {endpoint['port']} leads to {target}"
        assert endpoint.get("path", "/metrics") == "/metrics"
        assert endpoint.get("scheme", "http") == "http"
        if "interval" in endpoint and "scrapeTimeout" in endpoint:
            assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])
    assert effective_setting(monitored, "metrics") in ("true", "True", True), "metrics are off"
    address = effective_setting(monitored, "metrics_address")
    assert port_of(address) == metrics_port, f"metrics_address {address} != container port {metrics_port}"
    assert host_of(address) in ("0.0.0.0", "::"), f"metrics_address {address} is not on the pod IP"
    assert "--metrics" not in server_container(monitored).get("args", [])


def test_network_policy_lets_prometheus_reach_the_metrics_port(monitored):
    policy = one(monitored, "NetworkPolicy")["spec"]
    container = server_container(monitored)
    allowed = {p["port"] for rule in policy.get("ingress", []) for p in rule.get("ports", [])}
    assert allowed & {"metrics", container_port(container, "metrics")}


def expected_job(objects) -> str:
    """The job label Prometheus Operator gives the targets: the Service's
    name, or the value of its label named by jobLabel."""
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    job_label = monitor["spec"].get("jobLabel")
    return service["metadata"]["labels"][job_label] if job_label else service["metadata"]["name"]


def test_prometheus_rule_follows_the_crd(monitored):
    jsonschema.validate(rule_file(monitored), PROMETHEUS_RULE)


def test_alerts_are_complete(monitored):
    """Each alert: a unique name, a `for`, a severity, a summary and a
    description that says what to look at and links its runbook section."""
    rules = alerting_rules(monitored)
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), f"duplicate alerts: {names}"
    groups = [g["name"] for g in rule_file(monitored)["spec"]["groups"]]
    assert len(groups) == len(set(groups))
    for rule in rules:
        name = rule["alert"]
        assert name.startswith("Oxserve"), name
        assert seconds(rule.get("for", "")) > 0, f"{name}: no `for`, it fires on one evaluation"
        assert rule.get("labels", {}).get("severity") in ("critical", "warning", "info"), name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{name}: no summary"
        description = annotations.get("description", "")
        assert len(description) >= 150, f"{name}: the description should say what to check"
        assert f"Runbook: docs/metrics.md#{name.lower()}" in description, (
            f"{name}: the description does not end with its runbook link"
        )
        for text in annotations.values():
            assert text.count("{{") == text.count("}}"), f"{name}: unbalanced template {text!r}"


def test_the_required_alerts_exist(monitored):
    """Errors, p95 latency, p95 queue time, restarts and failed model loads."""
    by_metric = {}
    for rule in alerting_rules(monitored):
        for metric in scan(rule["expr"]).metric_names:
            by_metric.setdefault(metric, []).append(rule)
    assert any("code" in json.dumps(r) for r in by_metric.get("oxserve_requests_total", []))
    for metric in (
        "oxserve_request_duration_seconds_bucket",
        "oxserve_queue_duration_seconds_bucket",
        "kube_pod_container_status_restarts_total",
        "oxserve_model_state",
    ):
        assert metric in by_metric, f"no alert on {metric}"
    for metric in ("oxserve_request_duration_seconds_bucket", "oxserve_queue_duration_seconds_bucket"):
        assert any("histogram_quantile(0.95," in re.sub(r"\s+", "", r["expr"]) for r in by_metric[metric]), (
            f"no p95 alert on {metric}"
        )
    failed = by_metric["oxserve_model_state"]
    assert any(literal_matchers(r["expr"], "state") == {"failed"} for r in failed)


def test_rule_expressions_use_exported_metrics(monitored, exported):
    problems = []
    for rule in all_rules(monitored):
        for p in check_expr(rule["expr"], exported):
            problems.append(f"{rule.get('alert') or rule.get('record')}: {p}")
    assert not problems, "\n".join(problems)


def test_rules_select_the_deployed_job_and_container(monitored):
    """job="..." and container="..." literals are the ServiceMonitor's job
    and the server container's name, which the manifests decide."""
    job, container = expected_job(monitored), server_container(monitored)["name"]
    for rule in all_rules(monitored):
        name = rule.get("alert") or rule.get("record")
        jobs, containers = literal_matchers(rule["expr"], "job"), literal_matchers(rule["expr"], "container")
        assert jobs <= {job}, f"{name}: job {jobs} but the ServiceMonitor's targets get job={job!r}"
        assert containers <= {container}, f"{name}: container {containers}, the server's is {container!r}"


def test_rule_expressions_parse(monitored, exported):
    parser = promql_parser()
    for rule in all_rules(monitored):
        name = rule.get("alert") or rule.get("record")
        try:
            names = parsed_metric_names(parser, rule["expr"])
        except ValueError as e:
            raise AssertionError(f"{name}: {e}\n{rule['expr']}") from None
        assert names == scan(rule["expr"]).metric_names, name


def test_alert_labels_exist_in_the_result(monitored, exported):
    """`{{ $labels.x }}` in an annotation is empty unless the expression's
    result keeps x; every alert keeps namespace for routing."""
    parser = promql_parser()
    for rule in alerting_rules(monitored):
        kept = output_labels(parser, parser.parse(rule["expr"]), exported)
        assert "namespace" in kept, f"{rule['alert']}: the result has no namespace label ({kept})"
        used = set()
        for text in list(rule.get("annotations", {}).values()) + list(rule.get("labels", {}).values()):
            used |= set(re.findall(r"\$labels\.(\w+)", text))
        missing = used - kept
        assert not missing, f"{rule['alert']}: annotations use {sorted(missing)}, the result has {sorted(kept)}"


# --- other components ---------------------------------------------------------


def test_inflight_hpa_scales_on_an_exported_metric(exported):
    hpa = one(render("cpu+inflight-hpa"), "HorizontalPodAutoscaler")
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert names and all(n in exported.names for n in names), names
