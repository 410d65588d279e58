"""The PromQL checker the monitoring tests use on every expression (alert
rules, dashboard targets, variable queries, the ```promql blocks of
docs/metrics.md), against the metrics of one scrape (exposition.py).

The tokenizer below finds metric names (identifiers used as selectors: bare,
or before `{` or `[`), skipping functions, aggregations, keywords, label
lists of by/without/on/ignoring/group_left/group_right, matcher label names
and string literals. On top of "the metric exists", `check_expr` checks that
matcher labels exist on that metric, that grouping labels exist on some
metric of the expression, that counters are only read through
rate/irate/increase and gauges never are, that histogram_quantile reads
`_bucket` series and keeps `le`, and that `code` and `state` values are ones
the server writes.

promql-parser (Prometheus' grammar, pinned in requirements-dev.txt) then
parses every expression, must find the same metric names
(`parsed_metric_names`), and tells which labels an expression's result
carries (`output_labels`), so that `{{ $labels.x }}` in alert annotations and
`{{x}}` in panel legends name labels that exist.

Grafana's variables are substituted first (`substitute_grafana`), so that a
dashboard query is PromQL."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from exposition import EXTERNAL, GRPC_CODES, TARGET_LABELS, Exposition


# Grafana's built-in variables that may stand for a range.
GRAFANA_RANGES = {"__rate_interval", "__interval", "__range"}
GRAFANA_BUILTINS = GRAFANA_RANGES | {"__interval_ms", "__range_s", "__range_ms", "__dashboard"}


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


def literal_matchers(expr: str, label: str) -> set[str]:
    return {v for sel in scan(expr).selectors for k, op, v in sel.matchers if k == label and "$" not in v}


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
