"""The KServe ClusterServingRuntime and InferenceService example
(k8s/kserve/), statically: every field is one KServe's API has (the models
of KServe's own Python SDK, and the Kubernetes schemas for the container),
the fields KServe requires are there, and the runtime's container agrees
with the server: args `oxserve serve` accepts, probes on its gRPC port with
the right health services, KServe's model mount as the repository, the
image's user. tests/runtime/test_container.py runs the container too.

Also the headless Service of the HAProxy example (k8s/haproxy/)."""

from __future__ import annotations

import re

import kserve.models
import kubernetes.client
import kubernetes_validate
import pytest
import yaml

from deploy import (
    K8S,
    LIVENESS_SERVICE,
    READINESS_SERVICE,
    duration_seconds,
    host_of,
    parse_serve_args,
    port_of,
    render,
    serve_cli,
)

RUNTIME = K8S / "kserve" / "clusterservingruntime.yaml"
ISVC = K8S / "kserve" / "inferenceservice.yaml"
# Where KServe's storage initializer puts the storageUri's contents.
KSERVE_MODEL_MOUNT = "/mnt/models"
# KServe's protocol names (constants.InferenceServiceProtocol).
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
# Kubernetes' terminationGracePeriodSeconds when a pod does not set it, as
# an InferenceService's pod does not unless its predictor says so.
DEFAULT_GRACE_SECONDS = 30


def load(path):
    return yaml.safe_load(path.read_text())


def model_class(name: str):
    return getattr(kserve.models, name, None) or getattr(kubernetes.client, name)


def unknown_fields(value, type_name: str, path: str) -> list[str]:
    """Fields of `value` that the API type `type_name` does not have,
    recursively: the KServe SDK's and the Kubernetes client's models list
    each type's fields (attribute_map) and their types (openapi_types)."""
    m = re.fullmatch(r"(?:list|List)\[(.+)\]", type_name)
    if m:
        return [e for i, item in enumerate(value) for e in unknown_fields(item, m.group(1), f"{path}[{i}]")]
    m = re.fullmatch(r"(?:dict\(str, |Dict\[str, )(.+)[)\]]", type_name)
    if m:
        return [e for k, item in value.items() for e in unknown_fields(item, m.group(1), f"{path}.{k}")]
    if type_name in ("str", "int", "bool", "float", "object", "datetime"):
        return []
    cls = model_class(type_name)
    fields = {json_name: cls.openapi_types[attr] for attr, json_name in cls.attribute_map.items()}
    errors = [f"{path}.{k}: no such field in {type_name}" for k in value if k not in fields]
    for key, item in value.items():
        if key in fields:
            errors += unknown_fields(item, fields[key], f"{path}.{key}")
    return errors


@pytest.fixture(scope="module")
def runtime():
    return load(RUNTIME)


@pytest.fixture(scope="module")
def isvc():
    return load(ISVC)


def test_every_field_is_one_kserve_has(runtime, isvc):
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["kind"] == "ClusterServingRuntime"
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    errors = unknown_fields(runtime, "V1alpha1ClusterServingRuntime", "ClusterServingRuntime")
    errors += unknown_fields(isvc, "V1beta1InferenceService", "InferenceService")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("version", ("1.30.0", kubernetes_validate.latest_version()))
def test_the_container_is_a_valid_kubernetes_container(runtime, version):
    """KServe copies the runtime's container into the predictor pod: it
    must validate as a container (strict: no unknown fields)."""
    [container] = runtime["spec"]["containers"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [container]}}
    kubernetes_validate.validate(pod, version, strict=True)


def test_the_fields_kserve_requires(runtime, isvc):
    spec = runtime["spec"]
    # One model server container, under the name KServe looks for.
    [container] = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"]
    # ONNX models over the Open Inference Protocol on gRPC.
    formats = {f["name"]: f for f in spec["supportedModelFormats"]}
    assert formats["onnx"]["version"] == "1"
    assert formats["onnx"].get("autoSelect") is True
    assert set(spec["protocolVersions"]) <= KSERVE_PROTOCOLS
    assert spec["protocolVersions"] == ["grpc-v2"]
    # The InferenceService picks this runtime, format and protocol.
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert re.match(r"^[a-z0-9]+://", model["storageUri"]), model["storageUri"]


def test_the_container_agrees_with_the_server(runtime):
    [container] = runtime["spec"]["containers"]
    command, flags = parse_serve_args(container["args"])
    assert command == "serve"
    cli = serve_cli()
    for var in container.get("env", []):
        if var["name"].startswith("OXSERVE_"):
            assert var["name"] in cli.env_names, var["name"]
    # The model repository is where KServe puts the model.
    assert flags["--model-repository"].rstrip("/") == KSERVE_MODEL_MOUNT
    # One port, named h2c (HTTP/2 without TLS, i.e. gRPC, for KServe and
    # Knative), the server's gRPC port, on every interface (probes dial
    # the pod IP).
    [port] = container["ports"]
    assert port["name"] == "h2c"
    address = flags["--grpc-address"]
    assert host_of(address) == "0.0.0.0"
    assert port["containerPort"] == port_of(address)
    # gRPC probes on that port, asking the services the Deployment's ask.
    expected = {"startupProbe": READINESS_SERVICE, "readinessProbe": READINESS_SERVICE,
                "livenessProbe": LIVENESS_SERVICE}
    for probe, service in expected.items():
        grpc = container[probe]["grpc"]
        assert grpc["port"] == port["containerPort"], probe
        assert grpc.get("service", "") == service, probe
    # Metrics where KServe's scraping annotations say.
    annotations = runtime["spec"]["annotations"]
    metrics = flags.get("--metrics-address", cli.keys["metrics_address"].default)
    assert int(annotations["prometheus.kserve.io/port"]) == port_of(metrics)
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    # The drain ends before the kubelet's default grace period does.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = duration_seconds(flags.get("--drain-timeout", cli.keys["drain_timeout"].default))
    assert pre_stop + drain < DEFAULT_GRACE_SECONDS
    # POD_NAME from the downward API: served_by names the replica.
    env = {v["name"]: v for v in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_the_security_context_is_restricted_and_matches_the_image(runtime):
    [container] = runtime["spec"]["containers"]
    sc = container["securityContext"]
    pod_sc = next(o for o in render("cpu") if o["kind"] == "Deployment")["spec"]["template"]["spec"][
        "securityContext"
    ]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == pod_sc["runAsUser"] and sc["runAsGroup"] == pod_sc["runAsGroup"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"requests", "limits"} <= set(container["resources"])


def test_the_haproxy_example_service_is_headless_and_valid():
    service = load(K8S / "haproxy" / "service-headless.yaml")
    kubernetes_validate.validate(service, kubernetes_validate.latest_version(), strict=True)
    assert service["spec"]["clusterIP"] == "None"
    base = next(o for o in render("cpu") if o["kind"] == "Service")
    assert service["spec"]["selector"] == base["spec"]["selector"]
    [grpc] = [p for p in base["spec"]["ports"] if p["name"] == "grpc"]
    [port] = service["spec"]["ports"]
    assert port["port"] == grpc["port"] and port["targetPort"] == grpc["targetPort"]
    config = (K8S / "haproxy" / "haproxy.cfg").read_text()
    name = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port['port']}"
    assert f" {name} " in config, f"haproxy.cfg does not resolve {name}"
