"""The kustomize renderings: that they render, contain what the issue asks
for, and hang together (selectors, ports, names) — all without a cluster."""

import pytest

from deploy import (
    CORE_KINDS,
    CRD_KINDS,
    OPTIONAL_CRD_KINDS,
    RENDERINGS,
    container_port,
    labels_match,
    one,
    pod_spec,
    render,
    server_container,
)

NAMESPACE = "oxserve"


@pytest.fixture(params=RENDERINGS)
def objects(request):
    return render(request.param)


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_renders_with_every_object(rendering):
    objects = render(rendering)
    kinds = [o["kind"] for o in objects]
    assert sorted(set(kinds) - OPTIONAL_CRD_KINDS) == sorted(CORE_KINDS | CRD_KINDS)
    assert len(kinds) == len(set(kinds)), f"duplicate kinds: {kinds}"
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]
    assert one(objects, "Namespace")["metadata"]["name"] == NAMESPACE


def test_deployment_shape(objects):
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    rolling = spec["strategy"]["rollingUpdate"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert rolling["maxUnavailable"] == 0
    assert rolling["maxSurge"] not in (0, "0%"), "maxUnavailable 0 needs a surge to progress"
    labels = spec["template"]["metadata"]["labels"]
    assert labels_match(spec["selector"], labels)

    pod = pod_spec(objects)
    spreads = pod.get("topologySpreadConstraints", [])
    by_node = [s for s in spreads if s["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node, "no topology spread across nodes"
    for s in spreads:
        assert labels_match(s["labelSelector"], labels), "spread selector misses the pods"
    assert by_node[0]["whenUnsatisfiable"] == "DoNotSchedule"
    # A tainted node with no replica (a control plane) must not count as an
    # empty domain, or the spread blocks scheduling.
    assert by_node[0].get("nodeTaintsPolicy") == "Honor"

    # Service links would inject OXSERVE_SERVICE_HOST etc. for the Service
    # called "oxserve": the server's own variable prefix.
    assert pod.get("enableServiceLinks") is False
    assert pod.get("automountServiceAccountToken") is False


def test_resources_on_every_container(objects):
    pod = pod_spec(objects)
    for c in pod.get("initContainers", []) + pod["containers"]:
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in res.get(part, {}), f"{c['name']}: no {part}.{resource}"


def test_restricted_security_context(objects):
    """The Pod Security Standard "restricted", which the Namespace enforces."""
    pod = pod_spec(objects)
    pod_sc = pod.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True
    assert pod_sc.get("runAsUser", 1) != 0
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    for volume in pod.get("volumes", []):
        assert "hostPath" not in volume
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, c["name"]
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
        assert not sc.get("capabilities", {}).get("add"), c["name"]
        assert not sc.get("privileged"), c["name"]
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", c["name"]
    labels = one(objects, "Namespace")["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"


def test_models_volume(objects):
    """The server reads models from a volume mounted read-only at the
    model repository, filled by the init container or bound to a claim."""
    pod = pod_spec(objects)
    container = server_container(objects)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"].get("readOnly") is True
    volume = {v["name"]: v for v in pod["volumes"]}["models"]
    if "emptyDir" in volume:
        inits = pod.get("initContainers", [])
        writers = [
            c for c in inits
            if any(m["name"] == "models" and not m.get("readOnly") for m in c.get("volumeMounts", []))
        ]
        assert writers, "the models emptyDir is filled by no init container"
    else:
        assert volume["persistentVolumeClaim"]["readOnly"] is True
        assert not pod.get("initContainers")


def test_prometheus_scrape_annotations(objects):
    template = one(objects, "Deployment")["spec"]["template"]
    annotations = template["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/path") == "/metrics"
    port = int(annotations["prometheus.io/port"])
    assert port == container_port(server_container(objects), "metrics") == 8002


def test_service(objects):
    service = one(objects, "Service")
    spec = service["spec"]
    assert spec.get("type", "ClusterIP") == "ClusterIP"
    template = one(objects, "Deployment")["spec"]["template"]
    assert labels_match(spec["selector"], template["metadata"]["labels"])
    ports = {p["name"]: p for p in spec["ports"]}
    container = server_container(objects)
    grpc = ports["grpc"]
    assert grpc.get("appProtocol") == "kubernetes.io/h2c"
    assert grpc["targetPort"] in ("grpc", container_port(container, "grpc"))
    metrics = ports["metrics"]
    assert metrics["port"] == 8002
    assert metrics["targetPort"] in ("metrics", container_port(container, "metrics"))


def test_hpa(objects):
    hpa = one(objects, "HorizontalPodAutoscaler")
    spec = hpa["spec"]
    deployment = one(objects, "Deployment")
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert spec["minReplicas"] >= 2
    assert spec["maxReplicas"] >= spec["minReplicas"]
    cpu = [
        m for m in spec["metrics"]
        if m["type"] == "Resource" and m["resource"]["name"] == "cpu"
    ]
    assert cpu, "no CPU metric"
    up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] <= 30, "scale-up should react at once"
    assert down["stabilizationWindowSeconds"] >= 180, "scale-down should wait minutes"
    assert up["stabilizationWindowSeconds"] < down["stabilizationWindowSeconds"]


def test_pdb_and_network_policy(objects):
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert labels_match(pdb["selector"], labels)
    replicas = one(objects, "Deployment")["spec"]["replicas"]
    # A PDB that allows no disruption at the minimum replica count blocks drains.
    if "minAvailable" in pdb:
        assert int(pdb["minAvailable"]) < replicas
    else:
        assert pdb["maxUnavailable"] not in (0, "0%")

    policy = one(objects, "NetworkPolicy")["spec"]
    assert labels_match(policy["podSelector"], labels)
    container = server_container(objects)
    allowed_ports = {
        p["port"] for rule in policy.get("ingress", []) for p in rule.get("ports", [])
    }
    assert allowed_ports & {"grpc", container_port(container, "grpc")}, "gRPC not let in"
    assert allowed_ports & {"metrics", container_port(container, "metrics")}, "metrics not let in"
    traefik = [
        peer for rule in policy["ingress"] for peer in rule.get("from", [])
        if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "traefik"
    ]
    assert traefik, "Traefik's pods are not let in"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_gpu_only_in_gpu_overlay(rendering):
    objects = render(rendering)
    pod = pod_spec(objects)
    container = server_container(objects)
    gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
    image = container["image"]
    if rendering.startswith("gpu"):
        assert gpus == "1" or gpus == 1
        assert image.endswith("-gpu"), image
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert any(
            t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule"
            for t in pod["tolerations"]
        )
    else:
        assert gpus is None
        assert not image.endswith("-gpu"), image
        assert "nodeSelector" not in pod and "tolerations" not in pod


def test_inflight_component_adds_a_pods_metric():
    hpa = one(render("cpu+inflight-hpa"), "HorizontalPodAutoscaler")
    types = [m["type"] for m in hpa["spec"]["metrics"]]
    assert types == ["Resource", "Pods"]


def test_images_are_tagged(objects):
    pod = pod_spec(objects)
    for c in pod.get("initContainers", []) + pod["containers"]:
        name, _, tag = c["image"].rpartition(":")
        assert name and tag and tag != "latest", f"{c['name']}: untagged image {c['image']}"
