"""The Grafana dashboard of the monitoring component
(k8s/monitoring/dashboards/oxserve.json) and docs/metrics.md, against the
rendered component and the metrics the real server exports (the `exported`
fixture, conftest.py).

The dashboard: its ConfigMap carries the file unchanged, its panels and
variables are well formed, every query passes the PromQL checker
(promql.py), parses, and its legend names only labels the result keeps, and
the panels show every oxserve metric and what the issue asks for. The doc:
its metrics table lists every exported family, its ```promql examples pass
the same checks, every alert has a runbook section, and the flags and paths
it shows exist."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest

from deploy import MONITORING, ROOT, render, serve_cli, server_container
from exposition import FEATURE_METRICS
from promql import (
    _VARIABLE,
    GRAFANA_BUILTINS,
    check_expr,
    literal_matchers,
    metric_labels,
    output_labels,
    parsed_metric_names,
    promql_parser,
    scan,
    substitute_grafana,
)
from test_monitoring import alerting_rules, expected_job, monitoring_objects

DASHBOARD_FILE = MONITORING / "dashboards" / "oxserve.json"
DOC = ROOT / "docs" / "metrics.md"


# --- the dashboard --------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, including those inside collapsed rows."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def targets(dashboard: dict) -> list[tuple[dict, dict]]:
    return [(p, t) for p in panels(dashboard) if p["type"] != "row" for t in p.get("targets", [])]


def variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(variable: dict) -> str:
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)


def test_dashboard_configmap_is_the_file(monitored, dashboard):
    """The generated ConfigMap carries the JSON unchanged, the sidecar's
    label, a stable name, and fits in kubectl apply's annotation limit."""
    maps = [o for o in monitoring_objects(monitored) if o["kind"] == "ConfigMap"]
    assert len(maps) == 1
    cm = maps[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["name"] == "oxserve-dashboard", "a hashed name leaves old dashboards behind"
    assert cm["data"] == {"oxserve.json": DASHBOARD_FILE.read_text()}
    assert len(DASHBOARD_FILE.read_bytes()) < 200_000, "too big for kubectl apply's last-applied annotation"
    kubernetes_validate.validate(cm, kubernetes_validate.latest_version(), strict=True)


def test_dashboard_structure(dashboard):
    assert dashboard["uid"] == "oxserve" and dashboard["title"]
    assert isinstance(dashboard.get("schemaVersion"), int)
    all_panels = panels(dashboard)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells = {}
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("title"), f"panel {panel['id']} has no title"
        assert panel.get("description"), f"{panel['title']}: no description"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("targets"), f"{panel['title']}: no queries"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"
        for t in panel["targets"]:
            assert t.get("expr", "").strip(), f"{panel['title']}: empty query"
            assert t.get("datasource", panel["datasource"]) == panel["datasource"]


def test_dashboard_variables(dashboard):
    """A datasource variable, and namespace/job/model variables filled from a
    metric that is there before the first request; every $variable used is
    defined."""
    vs = variables(dashboard)
    assert vs["datasource"]["type"] == "datasource" and vs["datasource"]["query"] == "prometheus"
    assert {"namespace", "job", "model"} <= set(vs)
    assert vs["model"].get("includeAll") and vs["model"].get("multi")
    for name in ("namespace", "job", "model"):
        assert vs[name]["datasource"]["uid"] == "${datasource}"
        assert _LABEL_VALUES.match(variable_query(vs[name])), f"${name}: not a label_values() query"
    texts = [t["expr"] for _, t in targets(dashboard)] + [variable_query(v) for v in vs.values()]
    for text in texts:
        for m in _VARIABLE.finditer(text):
            used = m.group(1) or m.group(2)
            assert used in vs or used in GRAFANA_BUILTINS, f"${used} is not defined: {text}"


def test_dashboard_job_variable_defaults_to_the_service_monitor_job(dashboard, monitored):
    current = variables(dashboard)["job"].get("current", {})
    assert current.get("value") == expected_job(monitored)


def test_dashboard_queries_use_exported_metrics(dashboard, exported, monitored):
    problems = []
    container = server_container(monitored)["name"]
    for panel, t in targets(dashboard):
        for p in check_expr(t["expr"], exported):
            problems.append(f"{panel['title']} / {t['refId']}: {p}")
        if literal_matchers(t["expr"], "container") - {container}:
            problems.append(f"{panel['title']}: container is not {container}")
    for name, v in variables(dashboard).items():
        if v["type"] != "query":
            continue
        m = _LABEL_VALUES.match(variable_query(v))
        selector, label = m.groups()
        assert selector, f"${name}: label_values() without a metric searches every series"
        problems += [f"${name}: {p}" for p in check_expr(selector, exported, evaluated=False)]
        names = scan(selector).metric_names
        assert all(label in (metric_labels(exported, n) or set()) for n in names), (name, label)
    assert not problems, "\n".join(problems)


def test_dashboard_queries_parse_and_legends_use_kept_labels(dashboard, exported):
    parser = promql_parser()
    for panel, t in targets(dashboard):
        expr = substitute_grafana(t["expr"])
        where = f"{panel['title']} / {t['refId']}"
        try:
            tree = parser.parse(expr)
        except ValueError as e:
            raise AssertionError(f"{where}: {e}\n{expr}") from None
        assert parsed_metric_names(parser, t["expr"]) == scan(t["expr"]).metric_names, where
        kept = output_labels(parser, tree, exported)
        legend = t.get("legendFormat", "")
        used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert used <= kept, f"{where}: legend {legend!r} uses labels the result lacks ({sorted(kept)})"


def test_dashboard_shows_what_the_issue_asks(dashboard, exported):
    """Every oxserve metric is on some panel, and so are throughput, latency
    percentiles, queue time, batch sizes, errors by code, pods, memory, CPU
    and model state."""
    used = set()
    exprs = [t["expr"] for _, t in targets(dashboard)]
    for e in exprs:
        used |= scan(e).metric_names
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    missing = {f for f in exported.types if f.startswith("oxserve_")} - families - used
    assert not missing, f"oxserve metrics on no panel: {sorted(missing)}"
    for needed in ("up", "process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert needed in used, f"no panel uses {needed}"
    flat = [re.sub(r"\s+", "", e) for e in exprs]
    for q in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({q},sum" in e and "oxserve_request_duration_seconds_bucket" in e
                   for e in flat), f"no p{q[2:]} request latency"
    assert any("histogram_quantile(0.95" in e and "oxserve_queue_duration_seconds_bucket" in e for e in flat)
    assert any("histogram_quantile(0.95" in e and "oxserve_compute_infer_duration_seconds_bucket" in e
               for e in flat)
    assert any("by(model,code)" in e and "oxserve_requests_total" in e for e in flat), "errors by code"
    assert any("by(pod)" in e for e in flat), "nothing per pod"
    assert any(p["type"] == "heatmap" and "oxserve_batch_size_bucket" in json.dumps(p)
               for p in panels(dashboard)), "no batch size heatmap"


# --- docs/metrics.md ------------------------------------------------------------


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


def test_doc_lists_every_exported_metric(doc, exported):
    """The metrics table names every family /metrics shows, and the doc names
    no oxserve metric that does not exist."""
    rows = [line for line in doc.splitlines() if line.startswith("|")]
    table = "\n".join(rows)
    missing = [f for f in exported.types if f"`{f}`" not in table]
    assert not missing, f"docs/metrics.md's table lacks {missing}"
    mentioned = set(re.findall(r"\boxserve_[a-z_]+[a-z]", doc))
    unknown = mentioned - exported.names - set(exported.types) - FEATURE_METRICS
    assert not unknown, f"docs/metrics.md names metrics the server does not export: {sorted(unknown)}"


def test_doc_promql_examples_use_exported_metrics(doc, exported):
    blocks = re.findall(r"```promql\n(.*?)```", doc, re.S)
    assert len(blocks) >= 3, "docs/metrics.md has no ```promql examples"
    problems = []
    parser = promql_parser()
    for block in blocks:
        for expr in re.split(r"\n\s*\n", block):
            lines = [line for line in expr.splitlines() if not line.lstrip().startswith("#")]
            expr = "\n".join(lines).strip()
            if not expr:
                continue
            problems += [f"{expr!r}: {p}" for p in check_expr(expr, exported)]
            try:
                parser.parse(substitute_grafana(expr))
            except ValueError as e:
                problems.append(f"{expr!r}: {e}")
    assert not problems, "\n".join(problems)


def test_doc_has_a_runbook_for_every_alert(doc):
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", doc, re.M)
    }
    for rule in alerting_rules(render("cpu+monitoring")):
        assert rule["alert"].lower() in anchors, f"docs/metrics.md has no section {rule['alert']}"


def test_doc_flags_and_paths_exist(doc):
    """The flags it shows are `oxserve serve` flags; the paths exist."""
    commands = re.findall(r"oxserve serve[^\n`]*", doc)
    flags = {f for c in commands for f in re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", c)}
    assert {"--log-format", "--log-level", "--metrics-address"} <= flags
    unknown = flags - set(serve_cli().options)
    assert not unknown, f"docs/metrics.md runs `oxserve serve` with flags it lacks: {sorted(unknown)}"
    paths = set(re.findall(r"`((?:k8s|scripts|tests|examples|docs|server)/[\w./-]*\w)`", doc))
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/metrics.md names missing paths: {missing}"

