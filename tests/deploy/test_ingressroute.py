"""The Traefik IngressRoute against the rules of Traefik's CRD
(ingressroutes.traefik.io, v1alpha1) and against the Service it routes to.

The schema below is written from the CRD's openAPIV3Schema (Traefik v3):
required fields, types and enums. It is stricter in one way: unknown fields
are errors here, because the API server prunes them silently and a
misspelt `scheme` would quietly turn h2c into HTTP/1.1 (clients get 502)."""

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from deploy import K8S, RENDERINGS, container_port, one, render, server_container, tls_enabled

INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}

SERVICE = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "healthCheck": {"type": "object"},
        "kind": {"enum": ["Service", "TraefikService"]},
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "nativeLB": {"type": "boolean"},
        "nodePortLB": {"type": "boolean"},
        "passHostHeader": {"type": "boolean"},
        "port": INT_OR_STRING,
        "responseForwarding": {"type": "object"},
        "scheme": {"type": "string"},
        "serversTransport": {"type": "string"},
        "sticky": {"type": "object"},
        "strategy": {"type": "string"},
        "weight": {"type": "integer"},
    },
}

ROUTE = {
    "type": "object",
    "required": ["match"],
    "additionalProperties": False,
    "properties": {
        "kind": {"enum": ["Rule"]},
        "match": {"type": "string", "minLength": 1},
        "middlewares": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
                "additionalProperties": False,
            },
        },
        "observability": {"type": "object"},
        "priority": {"type": "integer"},
        "services": {"type": "array", "items": SERVICE},
        "syntax": {"type": "string"},
    },
}

INGRESS_ROUTE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        # traefik.containo.us was removed in Traefik v3.
        "apiVersion": {"const": "traefik.io/v1alpha1"},
        "kind": {"const": "IngressRoute"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
        },
        "spec": {
            "type": "object",
            "required": ["routes"],
            "additionalProperties": False,
            "properties": {
                "entryPoints": {"type": "array", "items": {"type": "string"}},
                "routes": {"type": "array", "minItems": 1, "items": ROUTE},
                "tls": {"type": "object"},
            },
        },
    },
}

# Traefik v3 rule matchers (routers' `rule` syntax).
MATCHERS = {
    "Host", "HostRegexp", "Path", "PathPrefix", "PathRegexp", "Method",
    "Header", "HeaderRegexp", "Query", "QueryRegexp", "ClientIP",
}

# What must reach the server through the ingress: inference, health, and
# both reflection versions (grpcurl asks v1 first, some clients only v1alpha).
REQUIRED_PREFIXES = {
    "/inference.GRPCInferenceService/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
}


def ingress_routes(objects):
    return [o for o in objects if o["kind"] == "IngressRoute"]


def rule_matchers(rule: str) -> list[tuple[str, list[str]]]:
    """(matcher, [arguments]) for every matcher call in a rule; asserts the
    rule is well formed: known matchers, backquoted arguments, balanced
    parentheses, && / || / ! between terms."""
    pos, depth, calls = 0, 0, []
    token = re.compile(r"\s*(?:(?P<call>[A-Za-z]+)\((?P<args>(?:\s*`[^`]*`\s*,?)*)\)|(?P<op>&&|\|\||!|\(|\)))")
    while pos < len(rule):
        if not rule[pos:].strip():
            break
        m = token.match(rule, pos)
        assert m, f"cannot parse rule at {rule[pos:]!r}"
        if m["call"]:
            assert m["call"] in MATCHERS, f"unknown matcher {m['call']}"
            args = re.findall(r"`([^`]*)`", m["args"])
            assert args, f"{m['call']} without arguments"
            calls.append((m["call"], args))
        elif m["op"] == "(":
            depth += 1
        elif m["op"] == ")":
            depth -= 1
            assert depth >= 0, "unbalanced ')' in rule"
        pos = m.end()
    assert depth == 0, "unbalanced '(' in rule"
    return calls


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_ingressroute_follows_the_crd(rendering):
    routes = ingress_routes(render(rendering))
    assert len(routes) == 1
    jsonschema.Draft202012Validator(INGRESS_ROUTE).validate(routes[0])


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_ingressroute_targets_the_grpc_service_over_h2c(rendering):
    objects = render(rendering)
    route_obj = ingress_routes(objects)[0]
    service = one(objects, "Service")
    namespace = route_obj["metadata"].get("namespace")
    assert namespace == service["metadata"]["namespace"]
    ports = service["spec"]["ports"]
    grpc_port = next(p for p in ports if p["name"] == "grpc")
    container = server_container(objects)
    for route in route_obj["spec"]["routes"]:
        assert route.get("kind", "Rule") == "Rule"
        assert route["services"], "route without services"
        for target in route["services"]:
            assert target.get("kind", "Service") == "Service"
            assert target["name"] == service["metadata"]["name"]
            assert target.get("namespace", namespace) == namespace
            # The port may be the Service port's number or its name; either
            # way it must be the gRPC port.
            assert target["port"] in (grpc_port["port"], grpc_port["name"]), (
                f"route port {target['port']} is not the Service's grpc port {grpc_port}"
            )
            if tls_enabled(objects):
                # k8s/components/tls: Traefik re-encrypts to the pods.
                assert target.get("scheme") == "https", "a TLS port needs scheme: https"
                assert target.get("serversTransport"), "https to the pods needs a ServersTransport"
            else:
                assert target.get("scheme") == "h2c", "plaintext gRPC needs scheme: h2c"
            assert not target.get("nativeLB"), "nativeLB balances per connection via the ClusterIP"
    # ... and the Service port leads to the container's gRPC port.
    assert grpc_port["targetPort"] in ("grpc", container_port(container, "grpc"))


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_ingressroute_routes_inference_health_and_reflection(rendering):
    route_obj = ingress_routes(render(rendering))[0]
    prefixes = set()
    for route in route_obj["spec"]["routes"]:
        calls = rule_matchers(route["match"])
        path_calls = [args for name, args in calls if name.startswith("Path")]
        if not path_calls:
            return  # a route without path matchers passes every RPC
        for name, args in calls:
            if name == "PathPrefix":
                prefixes.update(args)
    missing = REQUIRED_PREFIXES - prefixes
    assert not missing, f"not routed: {sorted(missing)}"


def test_traefik_values_set_read_timeout_for_every_entrypoint():
    """Streams outlive Traefik's default 60 s readTimeout: every entryPoint
    the IngressRoute binds to gets one in k8s/traefik/values.yaml."""
    values = yaml.safe_load(Path(K8S / "traefik" / "values.yaml").read_text())
    args = values.get("additionalArguments", [])
    route_obj = ingress_routes(render("cpu"))[0]
    entry_points = route_obj["spec"].get("entryPoints")
    assert entry_points, "bind the route to named entryPoints, whose timeouts are set"
    for ep in entry_points:
        prefix = f"--entryPoints.{ep}.transport.respondingTimeouts.readTimeout="
        set_to = [a[len(prefix):] for a in args if a.startswith(prefix)]
        assert set_to, f"entryPoint {ep}: no readTimeout in k8s/traefik/values.yaml"
        value = set_to[-1]
        assert value in ("0", "0s") or re.fullmatch(r"\d+[hms]", value), value
    assert values["providers"]["kubernetesCRD"]["enabled"] is True


def test_rule_parser_rejects_malformed_rules():
    with pytest.raises(AssertionError):
        rule_matchers("Host(`a`) && (PathPrefix(`/x/`)")
    with pytest.raises(AssertionError):
        rule_matchers("Hots(`a`)")
    assert rule_matchers("Host(`a`) && !PathPrefix(`/b/`)") == [
        ("Host", ["a"]),
        ("PathPrefix", ["/b/"]),
    ]
