"""The server's /metrics exposition, and what the monitoring checks know
about metrics besides it.

`parse_exposition` reads one scrape of `/metrics` (Prometheus text format
0.0.4) strictly enough to notice a malformed line, into an `Exposition`: the
families' TYPE and HELP, each series' label names, and the values of each
label. A histogram family counts as its `_bucket`, `_sum` and `_count`
series, never its bare name. Metrics of other exporters that the alerts and
panels may use are listed in EXTERNAL, with their labels; TARGET_LABELS are
the labels Prometheus adds to every scraped series."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


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

# Families the server shows only with a feature on that the monitored
# overlay leaves off; their own tests check them (API keys:
# tests/api_keys.rs, server/auth/tests.rs).
FEATURE_METRICS = {"oxserve_auth_rejections_total"}


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
