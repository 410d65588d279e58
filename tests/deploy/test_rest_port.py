"""The REST port (the server's http_address, 8000 as Triton's) is carried
everywhere the gRPC port is: the container, the Service, the NetworkPolicy
and the image. Kept in a file of its own so that it stands apart from the
other deployment checks."""

import pytest
from dockerfile_parse import DockerfileParser

from deploy import (
    RENDERINGS,
    ROOT,
    container_port,
    effective_setting,
    host_of,
    one,
    port_of,
    render,
    serve_cli,
    server_container,
)


@pytest.fixture(params=RENDERINGS)
def objects(request):
    return render(request.param)


def test_the_rest_port_is_served_and_let_in(objects):
    container = server_container(objects)
    port = container_port(container, "http")
    address = effective_setting(objects, "http_address") or serve_cli().keys["http_address"].default
    assert port_of(address) == port == 8000, address
    assert host_of(address) in ("0.0.0.0", "::"), f"http_address {address} is not on the pod IP"
    assert effective_setting(objects, "http") in (None, "true"), "REST is turned off"

    ports = {p["name"]: p for p in one(objects, "Service")["spec"]["ports"]}
    assert ports["http"]["port"] == 8000
    assert ports["http"]["targetPort"] in ("http", port)

    policy = one(objects, "NetworkPolicy")["spec"]
    grpc_peers = [
        rule.get("from") for rule in policy["ingress"]
        if any(p["port"] in ("grpc", container_port(container, "grpc")) for p in rule.get("ports", []))
    ]
    http_peers = [
        rule.get("from") for rule in policy["ingress"]
        if any(p["port"] in ("http", port) for p in rule.get("ports", []))
    ]
    assert http_peers == grpc_peers, "REST is let in from where gRPC is"


def test_the_image_exposes_the_rest_port():
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    exposed = {
        p.split("/")[0]
        for instruction in parser.structure
        if instruction["instruction"] == "EXPOSE"
        for p in instruction["value"].split()
    }
    default = port_of(serve_cli().keys["http_address"].default)
    assert str(default) in exposed, exposed
