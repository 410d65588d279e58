"""Prometheus for real: Debian's prometheus scrapes a running oxserve under
load with the settings the ServiceMonitor implies (job, interval, timeout,
path, target labels), loads the PrometheusRule's rules, and answers every
PromQL expression of the Grafana dashboard and of the rules through its HTTP
API. The load is shaped so that every alert's condition holds (errors,
server errors, slow and queued requests, a model that fails to load, a
restarting container, a target that cannot be scraped): every expression
must return series with the labels it promises, and every alert must go
pending or firing. promtool checks the rules and runs their unit tests
(alerts_test.yaml): each alert fires when it should and stays silent when
it should not.

OXSERVE_BIN is the server binary (target/debug/oxserve by default)."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import promql_parser
import pytest
import tritonclient.grpc as grpcclient
import yaml

from runtime import (
    EXAMPLES,
    ROOT,
    TEST_MODELS,
    ServerProcess,
    free_port,
    infer_intent,
    infer_mlp,
    model_repository,
    spin,
    triton,
    wait_until,
)

MONITORING = ROOT / "k8s" / "monitoring"
DASHBOARD = MONITORING / "dashboards" / "oxserve.json"
HERE = Path(__file__).resolve().parent
NAMESPACE = "oxserve"  # the ServiceMonitor's and the Deployment's
POD = "oxserve-7d9c-abcde"
GONE_POD = "oxserve-7d9c-gone"  # a target with nothing listening
# Grafana's $__rate_interval for a 15 s scrape interval: max(4 x 15 s, ...).
RATE_INTERVAL = "1m"
# Everything must have data within this long after Prometheus starts.
WITHIN = 240
# How often the load reloads a model: several loads fall in every
# $__rate_interval window.
RELOAD_EVERY = 15
# A slow request's work (~0.1 ms per iteration): two of them queue behind
# one another, so spin's p95 latency is well above OxserveHighLatencyP95's
# 0.5 s even on a fast machine.
SPIN_ITERATIONS = 6000


def rules_spec() -> dict:
    """The PrometheusRule's spec: a plain Prometheus rule file."""
    return yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]


def rules() -> list[dict]:
    return [r for g in rules_spec()["groups"] for r in g["rules"]]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not installed (scripts/check-runtime.sh installs Debian's prometheus)")
    return path


# --- promtool ---------------------------------------------------------------


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("rules")
    path = directory / "oxserve-rules.yaml"
    path.write_text(yaml.safe_dump(rules_spec(), sort_keys=False))
    return path


def test_promtool_checks_the_rules(rule_file):
    proc = subprocess.run([promtool(), "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout, proc.stdout


def test_promtool_unit_tests_each_alert_fires_and_stays_silent(rule_file, tmp_path):
    tests = yaml.safe_load((HERE / "alerts_test.yaml").read_text())
    assert tests["rule_files"] == [rule_file.name]
    # Every alert has a case where it fires and one where it stays silent.
    fired, silent = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    names = {r["alert"] for r in rules()}
    assert fired == names, f"alerts never shown to fire: {names - fired}"
    assert silent == names, f"alerts never shown to stay silent: {names - silent}"
    # promtool compares annotations verbatim: the unit tests are about when
    # alerts fire, so they run on the rules without them (the live test
    # below checks that the annotations render).
    spec = rules_spec()
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / rule_file.name).write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    proc = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yaml"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


# --- a real Prometheus ------------------------------------------------------


class KubeStateMetrics(http.server.ThreadingHTTPServer):
    """kube-state-metrics' series the dashboard and the restart alert read,
    for the pod: the container's limits from the Deployment, and a restart
    counter that goes up by one at every scrape."""

    def __init__(self, limits: dict[str, float]):
        self.restarts = 0
        self.limits = limits
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.restarts += 1
                labels = f'namespace="{NAMESPACE}",pod="{POD}",container="oxserve"'
                lines = [f"kube_pod_container_status_restarts_total{{{labels}}} {outer.restarts}"]
                for resource, value in outer.limits.items():
                    unit = "core" if resource == "cpu" else "byte"
                    lines.append(
                        f'kube_pod_container_resource_limits{{{labels},resource="{resource}",unit="{unit}"}} {value}'
                    )
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def quantity(text: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def deployment_limits() -> dict[str, float]:
    deployment = yaml.safe_load((ROOT / "k8s" / "base" / "deployment.yaml").read_text())
    [server] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "oxserve"]
    return {k: quantity(str(v)) for k, v in server["resources"]["limits"].items()}


def scrape_config(oxserve: str, gone: str, ksm: str) -> dict:
    """The scrape job the Prometheus Operator makes from the ServiceMonitor,
    for one pod (plus one that cannot be scraped): its job name is the
    Service's name, its targets carry namespace, pod, container, service
    and endpoint, as the Operator's relabelling gives them."""
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    [endpoint] = monitor["spec"]["endpoints"]
    service = yaml.safe_load((ROOT / "k8s" / "base" / "service.yaml").read_text())
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    job = service["metadata"]["name"]

    def target(address: str, pod: str) -> dict:
        return {
            "targets": [address],
            "labels": {
                "namespace": monitor["metadata"]["namespace"],
                "pod": pod,
                "container": "oxserve",
                "service": job,
                "endpoint": endpoint["port"],
            },
        }

    return {
        "global": {"evaluation_interval": "15s"},
        "rule_files": ["oxserve-rules.yaml"],
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": endpoint["interval"],
                "scrape_timeout": endpoint["scrapeTimeout"],
                "metrics_path": endpoint["path"],
                "scheme": endpoint["scheme"],
                "static_configs": [target(oxserve, POD), target(gone, GONE_POD)],
            },
            {
                "job_name": "kube-state-metrics",
                "scrape_interval": endpoint["interval"],
                "honor_labels": True,
                "static_configs": [{"targets": [ksm]}],
            },
        ],
    }


class Load:
    """Traffic shaped so that every alert's condition holds: ~10 % of the
    intent requests are INVALID_ARGUMENT; spin requests queue behind one
    another (p95 latency above 0.5 s, queue time above 0.1 s); spin
    requests with a 1 ms deadline expire in that queue (DEADLINE_EXCEEDED);
    mlp and intent answer normally (intent from the response cache for
    repeated questions); mlp is reloaded now and then."""

    def __init__(self, address: str):
        self.address = address
        self.stop = threading.Event()
        self.counts: dict[str, int] = {}
        self.threads = [
            threading.Thread(target=self.run, args=(f,), daemon=True)
            for f in (self.intent, self.mlp, self.slow, self.slow, self.expiring, self.reload)
        ]
        for t in self.threads:
            t.start()

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def run(self, step) -> None:
        client = triton(self.address)
        try:
            while not self.stop.is_set():
                step(client)
        finally:
            client.close()

    def intent(self, client) -> None:
        for i in range(9):
            # Two in three are the same question (response cache hits), one
            # in three is new (a miss, which runs the model).
            n = self.counts.get("intent ok", 0)
            infer_intent(client, [f"where is my package number {n}?" if i % 3 == 0 else "where is my package?"])
            self.count("intent ok")
        bad = grpcclient.InferInput("text", [1, 1], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
        try:
            client.infer("intent", [bad])
        except Exception as e:  # noqa: BLE001 - the error is the point
            assert "INVALID_ARGUMENT" in str(e) or "FP32" in str(e), e
            self.count("intent invalid")
        self.stop.wait(0.05)  # pace: a load, not a flood

    def mlp(self, client) -> None:
        infer_mlp(client, np.ones((2, 784), dtype=np.float32))
        self.count("mlp ok")
        self.stop.wait(0.05)

    def slow(self, client) -> None:
        spin(client, SPIN_ITERATIONS)
        self.count("spin ok")

    def reload(self, client) -> None:
        """A model reloaded now and then, as a rollout does: the load-time
        panel has loads in every window."""
        self.stop.wait(RELOAD_EVERY)
        if not self.stop.is_set():
            client.load_model("mlp")
            self.count("mlp reloaded")

    def expiring(self, client) -> None:
        inp = grpcclient.InferInput("ITERATIONS", [1], "INT64")
        inp.set_data_from_numpy(np.array([1], dtype=np.int64))
        try:
            client.infer("spin", [inp], timeout=1000)  # µs: the request parameter
            self.count("spin quick")
        except Exception as e:  # noqa: BLE001
            assert "DEADLINE_EXCEEDED" in str(e) or "deadline" in str(e).lower(), e
            self.count("spin expired")
        self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


class Prometheus:
    def __init__(self, config: dict, rule_file: Path):
        self.dir = tempfile.TemporaryDirectory(prefix="oxserve-prometheus-")
        directory = Path(self.dir.name)
        shutil.copy(rule_file, directory / rule_file.name)
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        check = subprocess.run(
            [promtool(), "check", "config", str(directory / "prometheus.yml")], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        self.address = f"127.0.0.1:{free_port()}"
        self.log = open(directory / "prometheus.log", "w+")
        binary = shutil.which("prometheus")
        assert binary, "prometheus not installed"
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={self.address}",
                "--log.level=warn",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.output()}")
            try:
                return urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2).status == 200
            except OSError:
                return False

        wait_until(ready, 60, "Prometheus to be ready", interval=0.2)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def api(self, path: str, **params) -> dict:
        url = f"http://{self.address}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        reply = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert reply["status"] == "success", reply
        return reply["data"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def prometheus(rule_file):
    repo = model_repository(EXAMPLES / "intent", EXAMPLES / "mlp", TEST_MODELS / "spin", TEST_MODELS / "broken")
    # The intent model answers its repeated requests from the response
    # cache (the cache panel's hit ratio).
    (Path(repo.name) / "intent" / "config.pbtxt").write_text("response_cache { enable: true }\n")
    # One spin instance, so that spin requests queue behind one another
    # (the latency and queue-time alerts); with instances the server picks,
    # a second instance would take work as soon as the first is saturated.
    (Path(repo.name) / "spin" / "config.pbtxt").write_text("instance_group [ { count: 1, kind: KIND_CPU } ]\n")
    # Relaxed readiness, so that the broken model fails to load (the
    # OxserveModelLoadFailed alert) and the others serve; explicit control,
    # so that the load can reload a model.
    server = ServerProcess(
        repo.name,
        args=("--strict-readiness", "false", "--model-control-mode", "explicit", "--load-model", "*"),
    )
    ksm = KubeStateMetrics(deployment_limits())
    load = prom = None
    try:
        server.wait_ready()
        load = Load(server.grpc)
        config = scrape_config(server.metrics, f"127.0.0.1:{free_port()}", ksm.address)
        prom = Prometheus(config, rule_file)
        yield prom
    finally:
        if load:
            load.close()
            print(f"load: {load.counts}")
        if prom:
            prom.close()
        ksm.shutdown()
        server.stop()
        repo.cleanup()


def grafana(expr: str) -> str:
    """A dashboard query as Grafana sends it: this namespace and job, every
    model ("All" is `.*`), $__rate_interval for a 15 s scrape."""
    return (
        expr.replace("$namespace", NAMESPACE)
        .replace("$job", "oxserve")
        .replace("$model", ".*")
        .replace("$__rate_interval", RATE_INTERVAL)
    )


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every panel target, rows included."""
    board = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(board["panels"])
    return out


def result_labels(node) -> frozenset[str] | None:
    """The label names every series of the expression's result carries, as
    its outermost aggregation promises; None when the expression keeps the
    labels of the series it selects."""
    kind = type(node).__name__
    if kind == "AggregateExpr":
        if node.modifier is None:
            return frozenset()
        if node.modifier.type == promql_parser.AggModifierType.By:
            return frozenset(node.modifier.labels)
        return None
    if kind == "Call":
        if node.func.name == "histogram_quantile":
            inner = result_labels(node.args[1])
            return None if inner is None else inner - {"le"}
        if node.func.name == "vector":
            return frozenset()
        return result_labels(node.args[0])
    if kind == "ParenExpr":
        return result_labels(node.expr)
    if kind == "BinaryExpr":
        left = result_labels(node.lhs)
        return left if left is not None or type(node.lhs).__name__ != "NumberLiteral" else result_labels(node.rhs)
    if kind == "NumberLiteral":
        return frozenset()
    return None


def shape_problem(prom: Prometheus, expr: str) -> str | None:
    """Why the expression's current result is not data of its promised
    shape, or None if it is."""
    data = prom.api("query", query=expr)
    if data["resultType"] != "vector":
        return f"result type {data['resultType']}"
    result = data["result"]
    if not result:
        return "no data"
    expected = result_labels(promql_parser.parse(expr))
    for series in result:
        labels = frozenset(k for k in series["metric"] if k != "__name__")
        if expected is not None and labels != expected:
            return f"labels {sorted(labels)}, expected {sorted(expected)}"
        value = float(series["value"][1])
        if value != value:  # NaN: a ratio of nothing
            return f"NaN for {series['metric']}"
    return None


def test_every_dashboard_and_alert_expression_returns_data_of_its_shape(prometheus):
    queries = [(f"panel {t!r}", grafana(e)) for t, e in dashboard_queries()]
    queries += [(f"alert {r['alert']}", r["expr"]) for r in rules()]
    assert len(queries) > 30

    def problems():
        found = {}
        for what, expr in queries:
            problem = shape_problem(prometheus, expr)
            if problem:
                found[what] = problem
        return found or None

    # Rates need two scrapes, and increase() two restarts: poll until every
    # expression has data (or say which have not).
    started = time.monotonic()
    deadline = started + WITHIN
    while (left := problems()) and time.monotonic() < deadline:
        time.sleep(2)
    assert not left, f"expressions without data of their shape after {WITHIN} s: {json.dumps(left, indent=1)}"
    print(f"all {len(queries)} expressions returned data of their shape after {time.monotonic() - started:.0f} s")


def test_dashboard_variables_list_this_deployment(prometheus):
    board = json.loads(DASHBOARD.read_text())
    seen = {}
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", grafana(query))
        assert m, query
        selector, label = m.groups()
        values = wait_until(
            lambda: prometheus.api(f"label/{label}/values", **{"match[]": selector}),
            WITHIN, f"values of {label}",
        )
        seen[variable["name"]] = values
    assert seen["namespace"] == [NAMESPACE]
    assert seen["job"] == ["oxserve"]
    assert set(seen["model"]) == {"intent", "mlp", "spin", "broken"}


def test_scrape_targets_are_what_the_service_monitor_implies(prometheus):
    def targets():
        active = prometheus.api("targets")["activeTargets"]
        states = {t["labels"].get("pod", t["labels"]["job"]): t["health"] for t in active}
        return states if "unknown" not in states.values() and len(states) == 3 else None

    states = wait_until(targets, WITHIN, "every target scraped")
    assert states == {POD: "up", GONE_POD: "down", "kube-state-metrics": "up"}
    active = prometheus.api("targets")["activeTargets"]
    oxserve = next(t for t in active if t["labels"].get("pod") == POD)
    assert oxserve["scrapeInterval"] == "15s" and oxserve["scrapeTimeout"] == "10s"
    assert oxserve["scrapeUrl"].endswith("/metrics")


def test_every_alert_goes_pending_or_firing(prometheus):
    """Prometheus itself evaluates the rule file: every rule is healthy and,
    with the load above, every alert's condition holds (pending until its
    `for` has passed)."""
    names = {r["alert"] for r in rules()}

    def states():
        found = {}
        for group in prometheus.api("rules")["groups"]:
            for rule in group["rules"]:
                assert rule["health"] in ("ok", "unknown"), rule
                found[rule["name"]] = rule["state"]
        return found if all(found.get(n) in ("pending", "firing") for n in names) else None

    found = wait_until(states, WITHIN, "every alert pending or firing", interval=2)
    print(f"alerts: {found}")
    # Their annotations render, with the labels filled in.
    for alert in prometheus.api("alerts")["alerts"]:
        annotations = alert["annotations"]
        assert annotations.get("summary") and annotations.get("description"), alert
        for text in annotations.values():
            assert "<no value>" not in text and "{{" not in text, alert
        for label in ("model", "pod"):
            if label in alert["labels"]:
                assert alert["labels"][label] in annotations["summary"], alert
