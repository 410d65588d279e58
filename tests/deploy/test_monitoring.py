"""The optional monitoring component (k8s/monitoring): a ServiceMonitor, a
PrometheusRule and a Grafana dashboard, against the manifests they watch and
against the metrics the real server exports.

The list of metrics is not written down here: the module starts
target/debug/oxserve (or OXSERVE_BIN) with the overlay's config file, sends
one good and one bad inference, and scrapes `/metrics`. A histogram family
counts as its `_bucket`, `_sum` and `_count` series, never its bare name.
Metrics of other exporters that the alerts and panels may use are listed in
EXTERNAL, with their labels.

Every PromQL expression (alert rules, dashboard targets, variable queries,
the ```promql blocks of docs/metrics.md) is read by the tokenizer below,
which finds metric names (identifiers used as selectors: bare, or before
`{` or `[`), skipping functions, aggregations, keywords, label lists of
by/without/on/ignoring/group_left/group_right, matcher label names and
string literals. On top of "the metric exists", it checks that matcher
labels exist on that metric, that grouping labels exist on some metric of the
expression, that counters are only read through rate/irate/increase and
gauges never are, that histogram_quantile reads `_bucket` series and keeps
`le`, and that `code` and `state` values are ones the server writes.

promql-parser (Prometheus' grammar, pinned in requirements-dev.txt) then parses
every expression, must find the same metric names, and tells which labels an
alert's result carries, so that `{{ $labels.x }}` in annotations and
`{{x}}` in panel legends name labels that exist."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from dataclasses import dataclass, field

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy import (
    MONITORING,
    ROOT,
    container_port,
    config_text,
    effective_setting,
    host_of,
    labels_match,
    one,
    port_of,
    render,
    serve_cli,
    server_container,
)
from test_server import GRPCURL, Server

DASHBOARD_FILE = MONITORING / "dashboards" / "oxserve.json"
DOC = ROOT / "docs" / "metrics.md"
MONITORED = ("cpu+monitoring", "gpu+monitoring")
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule", "ConfigMap"}

# Labels Prometheus gives every target the ServiceMonitor finds (Prometheus
# Operator's defaults); queries may select and group by them.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "service", "endpoint"})


@dataclass(frozen=True)
class External:
    kind: str  # "counter" or "gauge"
    labels: frozenset
    source: str


# Metrics the server does not export that the rules and the dashboard may use.
EXTERNAL = {
    "up": External("gauge", TARGET_LABELS, "Prometheus, per scrape target"),
    "kube_pod_container_status_restarts_total": External(
        "counter", frozenset({"namespace", "pod", "container", "uid"}) | TARGET_LABELS,
        "kube-state-metrics",
    ),
    "kube_pod_container_resource_limits": External(
        "gauge",
        frozenset({"namespace", "pod", "container", "uid", "node", "resource", "unit"}) | TARGET_LABELS,
        "kube-state-metrics",
    ),
}

GRPC_CODES = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
})

# Grafana's built-in variables that may stand for a range.
GRAFANA_RANGES = {"__rate_interval", "__interval", "__range"}
GRAFANA_BUILTINS = GRAFANA_RANGES | {"__interval_ms", "__range_s", "__range_ms", "__dashboard"}


# --- the server's metrics ---------------------------------------------------


@dataclass
class Exposition:
    """What one scrape of /metrics showed."""

    types: dict[str, str] = field(default_factory=dict)  # family -> TYPE
    helps: set[str] = field(default_factory=set)  # families with HELP
    labels: dict[str, set[str]] = field(default_factory=dict)  # series name -> label names
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (series, label) -> values

    @property
    def names(self) -> set[str]:
        """Series names a query may select: samples seen, and for each
        histogram family its _bucket/_sum/_count (not the family's own name)."""
        names = set(self.labels)
        for family, kind in self.types.items():
            if kind == "histogram":
                names |= {family + s for s in ("_bucket", "_sum", "_count")}
                names.discard(family)
        return names

    def kind(self, name: str) -> str:
        """"counter" for what only rises (counters, histogram series),
        "gauge" otherwise."""
        if self.types.get(name) == "counter":
            return "counter"
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and self.types.get(name[: -len(suffix)]) == "histogram":
                return "counter"
        return "gauge"

    def label_names(self, name: str) -> set[str]:
        for suffix in ("_sum", "_count"):
            family = name[: -len(suffix)]
            if name.endswith(suffix) and self.types.get(family) == "histogram":
                return self.labels.get(family + "_bucket", set()) - {"le"}
        return self.labels.get(name, set())


_SAMPLE = re.compile(
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_exposition(text: str) -> Exposition:
    """Prometheus text format 0.0.4, strictly enough to notice a malformed line."""
    exp = Exposition()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            exp.types[family] = kind
            continue
        if line.startswith("# HELP "):
            exp.helps.add(line.split(" ", 3)[2])
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"line {number} of /metrics is not a sample: {line!r}"
        name, label_text, value = m.groups()
        float(value)  # "+Inf", "NaN" and numbers all parse
        labels = dict(_LABEL.findall(label_text or ""))
        rebuilt = ",".join(f'{k}="{v}"' for k, v in labels.items())
        assert rebuilt == (label_text or "").rstrip(","), f"line {number}: bad labels {line!r}"
        exp.labels.setdefault(name, set()).update(labels)
        for key, val in labels.items():
            exp.values.setdefault((name, key), set()).add(val)
    return exp


def _send_requests(address: str) -> None:
    """One inference that succeeds and one the server refuses
    (INVALID_ARGUMENT), so that oxserve_requests_total has series."""
    good = (ROOT / "tests" / "interop" / "requests" / "mlp.json").read_text()
    bad = json.dumps({
        "model_name": "mlp", "id": "monitoring-check",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3],
                    "contents": {"fp32_contents": [1, 2, 3]}}],
    })
    if GRPCURL.is_file():
        for body, ok in ((good, True), (bad, False)):
            result = subprocess.run(
                [str(GRPCURL), "-plaintext", "-d", "@", address,
                 "inference.GRPCInferenceService/ModelInfer"],
                input=body, capture_output=True, text=True, timeout=30,
            )
            assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return
    # Without grpcurl (scripts/install-grpcurl.sh), tritonclient from the venv.
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(address)
    data = json.loads(good)["inputs"][0]
    x = grpcclient.InferInput("input", data["shape"], "FP32")
    x.set_data_from_numpy(np.array(data["contents"]["fp32_contents"], np.float32).reshape(data["shape"]))
    client.infer("mlp", [x])
    wrong = grpcclient.InferInput("input", [1, 3], "FP32")
    wrong.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("mlp", [wrong])


# Families the server shows only with a feature on that the monitored
# overlay leaves off; their own tests check them (API keys:
# tests/api_keys.rs, server/auth/tests.rs).
FEATURE_METRICS = {"oxserve_auth_rejections_total"}


@pytest.fixture(scope="module")
def exported() -> Exposition:
    """The real server, started with the monitored overlay's config file."""
    _, text = config_text(render("cpu+monitoring"))
    server = Server(text)
    try:
        server.wait_ready()
        _send_requests(server.address)
        with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=10) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
            body = r.read().decode()
    finally:
        server.stop()
    return parse_exposition(body)


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


# --- PromQL -----------------------------------------------------------------

AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
})
FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan",
    "tanh", "time", "timestamp", "vector", "year",
})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "start", "end"})
NUMBERS = frozenset({"inf", "nan", "Inf", "NaN", "INF", "NAN"})
# Functions that only make sense over a counter, and those only over a gauge.
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase", "resets"})
GAUGE_FUNCTIONS = frozenset({"delta", "idelta", "deriv", "predict_linear"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![\w.]))
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![\w.]))
  | (?P<ident>[a-zA-Z_][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}@])
    """,
    re.X,
)
_DURATION = r"(?:\d+(?:ms|s|m|h|d|w|y))+"
_RANGE = re.compile(rf"^\[\s*{_DURATION}\s*(?::\s*(?:{_DURATION})?\s*)?\]$")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_]\w*)(?::\w+)?\}|([A-Za-z_]\w*))")


def substitute_grafana(expr: str) -> str:
    """Grafana's range variables become a duration, so that the text is
    PromQL; other variables only ever appear inside label values."""
    return _VARIABLE.sub(
        lambda m: "5m" if (m.group(1) or m.group(2)) in GRAFANA_RANGES else m.group(0), expr
    )


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read {expr[pos:pos + 20]!r} at {pos} of {expr!r}")
        pos = m.end()
        if m.lastgroup not in ("space", "comment"):
            tokens.append((m.lastgroup, m.group()))
    return tokens


@dataclass
class Selector:
    name: str | None
    matchers: list[tuple[str, str, str]]  # (label, op, value without quotes)
    ranged: bool
    function: str | None  # the innermost function call around it


@dataclass
class Span:
    function: str
    selectors: range  # indexes into Scan.selectors
    groupings: range  # indexes into Scan.groupings


@dataclass
class Scan:
    selectors: list[Selector] = field(default_factory=list)
    groupings: list[tuple[str, list[str]]] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> set[str]:
        return {s.name for s in self.selectors if s.name}


def _unquote(token: str) -> str:
    return token[1:-1].encode().decode("unicode_escape") if token[0] != "`" else token[1:-1]


def scan(expr: str) -> Scan:
    """Metric selectors, grouping label lists and calls of one expression."""
    out = Scan()
    try:
        tokens = tokenize(substitute_grafana(expr))
    except ValueError as e:
        out.problems.append(str(e))
        return out
    stack: list[tuple[str, int, int]] = []  # (function or "(", first selector, first grouping)
    pending: str | None = None
    i = 0

    def peek(k: int = 0) -> tuple[str, str]:
        return tokens[i + k] if i + k < len(tokens) else ("end", "")

    def label_list() -> list[str]:
        nonlocal i
        assert peek()[1] == "("
        i += 1
        labels = []
        while peek()[1] != ")":
            kind, text = peek()
            if kind == "ident":
                labels.append(text)
            elif kind == "string":
                labels.append(_unquote(text))
            elif text != ",":
                out.problems.append(f"unexpected {text!r} in a label list")
                if kind == "end":
                    return labels
            i += 1
        i += 1
        return labels

    def matchers() -> list[tuple[str, str, str]]:
        nonlocal i
        i += 1  # "{"
        found = []
        while peek()[1] != "}":
            if peek()[1] == ",":
                i += 1
                continue
            (k1, name), (_, op), (k3, value) = peek(), peek(1), peek(2)
            if k1 not in ("ident", "string") or op not in ("=", "!=", "=~", "!~") or k3 != "string":
                out.problems.append(f"malformed matcher near {name!r} {op!r} {value!r}")
                while peek()[0] != "end" and peek()[1] != "}":
                    i += 1
                break
            found.append((name if k1 == "ident" else _unquote(name), op, _unquote(value)))
            i += 3
        i += 1  # "}"
        return found

    def selector(name: str | None) -> None:
        nonlocal i
        function = next((f for f, _, _ in reversed(stack) if f != "("), None)
        found = matchers() if peek()[1] == "{" else []
        if name is None:
            names = [v for k, op, v in found if k == "__name__" and op == "="]
            name = names[0] if names else None
            if name is None:
                out.problems.append(f"a selector without a metric name: {found}")
        ranged = peek()[0] == "range"
        if ranged:
            if not _RANGE.match(peek()[1]):
                out.problems.append(f"bad range {peek()[1]}")
            i += 1
        out.selectors.append(Selector(name, found, ranged, function))

    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "ident":
            if text in GROUPING:
                i += 1
                if peek()[1] == "(":
                    out.groupings.append((text, label_list()))
                elif text not in ("group_left", "group_right"):
                    out.problems.append(f"{text} without a label list")
                continue
            if text in AGGREGATIONS or text in FUNCTIONS:
                pending = text
                i += 1
                if text in AGGREGATIONS and peek()[1] in ("by", "without"):
                    continue  # the clause comes before the parenthesis
                if peek()[1] != "(":
                    out.problems.append(f"{text} is not called")
                continue
            if text in KEYWORDS or text in NUMBERS:
                i += 1
                continue
            i += 1
            if peek()[1] == "(":
                out.problems.append(f"unknown function {text}")
                pending = text
                continue
            selector(text)
            continue
        if text == "{":
            selector(None)
            continue
        if text == "(":
            stack.append((pending or "(", len(out.selectors), len(out.groupings)))
            pending = None
        elif text == ")":
            if not stack:
                out.problems.append("unbalanced )")
            else:
                function, first_sel, first_group = stack.pop()
                if function != "(":
                    out.spans.append(Span(
                        function,
                        range(first_sel, len(out.selectors)),
                        range(first_group, len(out.groupings)),
                    ))
                if peek(1)[0] == "range":  # a subquery
                    i += 1
                    if not _RANGE.match(tokens[i][1]):
                        out.problems.append(f"bad subquery range {tokens[i][1]}")
        elif kind == "range":
            out.problems.append(f"a range {text} that follows no selector")
        elif text == "}":
            out.problems.append("unbalanced }")
        i += 1
    if stack:
        out.problems.append("unclosed (")
    return out


def metric_labels(exp: Exposition, name: str) -> set[str] | None:
    if name in EXTERNAL:
        return set(EXTERNAL[name].labels)
    if name in exp.names:
        return exp.label_names(name) | TARGET_LABELS
    return None


def metric_kind(exp: Exposition, name: str) -> str:
    return EXTERNAL[name].kind if name in EXTERNAL else exp.kind(name)


def check_values(exp: Exposition, name: str, label: str, op: str, value: str) -> list[str]:
    """Literal values of the labels whose values the server fixes."""
    if "$" in value:
        return []  # a Grafana variable
    if label == "code":
        allowed = GRPC_CODES
    elif (name, label) == ("oxserve_model_state", "state"):
        allowed = exp.values[(name, label)]
    else:
        return []
    if op in ("=", "!="):
        wanted = [value]
    elif re.fullmatch(r"[A-Za-z_]+(\|[A-Za-z_]+)*", value):
        wanted = value.split("|")
    else:
        return []
    return [f'{label}="{v}" is a value {name} never has ({sorted(allowed)})' for v in wanted
            if v not in allowed]


def check_expr(expr: str, exp: Exposition, *, evaluated: bool = True) -> list[str]:
    """Problems with one expression; `evaluated` is false for the selector of
    a Grafana label_values() query, which is not run as PromQL."""
    s = scan(expr)
    problems = list(s.problems)
    all_labels: set[str] = set(TARGET_LABELS)
    for sel in s.selectors:
        if sel.name is None:
            continue
        labels = metric_labels(exp, sel.name)
        if labels is None:
            hint = ""
            if sel.name in exp.types and exp.types[sel.name] == "histogram":
                hint = " (a histogram: use _bucket, _sum or _count)"
            problems.append(f"{sel.name} is not a metric the server exports{hint} nor in EXTERNAL")
            continue
        all_labels |= labels
        for label, op, value in sel.matchers:
            if label != "__name__" and label not in labels:
                problems.append(f"{sel.name} has no label {label!r} (it has {sorted(labels)})")
            problems += check_values(exp, sel.name, label, op, value)
        if not evaluated:
            continue
        kind = metric_kind(exp, sel.name)
        if kind == "counter" and sel.function not in COUNTER_FUNCTIONS:
            problems.append(f"counter {sel.name} read without rate()/increase()")
        if kind == "gauge" and sel.function in COUNTER_FUNCTIONS:
            problems.append(f"gauge {sel.name} read with {sel.function}()")
        if kind == "counter" and sel.function in GAUGE_FUNCTIONS:
            problems.append(f"counter {sel.name} read with {sel.function}()")
        if sel.ranged and sel.function is None:
            problems.append(f"range selector {sel.name}[...] outside any function")
    for keyword, labels in s.groupings:
        unknown = set(labels) - all_labels
        if unknown:
            problems.append(f"{keyword} ({', '.join(labels)}): no metric here has {sorted(unknown)}")
    for span in s.spans:
        if span.function != "histogram_quantile":
            continue
        names = [s.selectors[k].name for k in span.selectors]
        if not names or not all(n and n.endswith("_bucket") for n in names):
            problems.append(f"histogram_quantile over {names}, not _bucket series")
        for k in span.groupings:
            keyword, labels = s.groupings[k]
            if (keyword == "by") != ("le" in labels) and keyword in ("by", "without"):
                problems.append(f"histogram_quantile: {keyword} ({', '.join(labels)}) loses le")
    return problems


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


def promql_parser():
    return pytest.importorskip("promql_parser", reason="promql-parser (requirements-dev.txt) not installed")


def parsed_metric_names(parser, expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node):
        if isinstance(node, parser.VectorSelector):
            if node.name:
                names.add(node.name)
            names.update(
                m.value for m in node.matchers.matchers
                if m.name == "__name__" and str(m.op).endswith("Equal")
            )

    parser.walk(parser.parse(substitute_grafana(expr)), visit)
    return names


def output_labels(parser, node, exp: Exposition) -> set[str]:
    """Labels every series of the expression's result carries (at least)."""
    p = parser
    if isinstance(node, p.MatrixSelector):
        node = node.vector_selector
    if isinstance(node, p.VectorSelector):
        name = node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__")
        return metric_labels(exp, name) or set()
    if isinstance(node, (p.ParenExpr, p.UnaryExpr, p.SubqueryExpr)):
        return output_labels(p, node.expr, exp)
    if isinstance(node, (p.NumberLiteral, p.StringLiteral)):
        return set()
    if isinstance(node, p.AggregateExpr):
        inner = output_labels(p, node.expr, exp)
        modifier = node.modifier
        if str(node.op) in ("topk", "bottomk", "limitk", "limit_ratio"):
            return inner  # whole series, a selection of them
        if modifier is None:
            return set()
        if modifier.type == p.AggModifierType.By:
            return set(modifier.labels)
        return inner - set(modifier.labels)
    if isinstance(node, p.Call):
        name = node.func.name
        if name in ("vector", "time", "scalar", "pi"):
            return set()
        vectors = [a for a in node.args if isinstance(a, p.Expr) and not isinstance(
            a, (p.NumberLiteral, p.StringLiteral))]
        labels = output_labels(p, vectors[0], exp) if vectors else set()
        if name == "histogram_quantile":
            labels -= {"le"}
        if name in ("label_replace", "label_join"):
            labels |= {node.args[1].val}
        return labels
    if isinstance(node, p.BinaryExpr):
        lhs, rhs = output_labels(p, node.lhs, exp), output_labels(p, node.rhs, exp)
        scalar = lambda n: isinstance(n, p.NumberLiteral) or (  # noqa: E731
            isinstance(n, p.ParenExpr) and scalar(n.expr))
        if scalar(node.lhs):
            return rhs
        if scalar(node.rhs):
            return lhs
        op = str(node.op)
        if op == "or":
            return lhs & rhs
        labels = set(lhs)
        if node.modifier is not None and node.modifier.group_labels:
            labels |= set(node.modifier.group_labels)
        return labels
    raise AssertionError(f"unhandled PromQL node {type(node).__name__}")


# --- the rendered component ---------------------------------------------------


@pytest.fixture(scope="module", params=MONITORED)
def monitored(request):
    return render(request.param)


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


def literal_matchers(expr: str, label: str) -> set[str]:
    return {v for sel in scan(expr).selectors for k, op, v in sel.matchers if k == label and "$" not in v}


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


# --- other components ---------------------------------------------------------


def test_inflight_hpa_scales_on_an_exported_metric(exported):
    hpa = one(render("cpu+inflight-hpa"), "HorizontalPodAutoscaler")
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert names and all(n in exported.names for n in names), names
