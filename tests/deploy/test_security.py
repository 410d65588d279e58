"""The security manifests: the NetworkPolicy lets the metrics port in only
from the monitoring namespace, and the optional TLS component
(k8s/components/tls) mounts its Secret as a directory, sets the TLS
settings, moves the probes to the plaintext health listener, and the
server started with those settings (and certificates made here) passes the
probes there while refusing plaintext on its gRPC port."""

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from deploy import (
    BINARY,
    LIVENESS_SERVICE,
    READINESS_SERVICE,
    RENDERINGS,
    ROOT,
    container_port,
    effective_setting,
    one,
    pod_spec,
    port_of,
    probe_port,
    render,
    server_container,
)

MODELS = ROOT / "examples" / "models"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_metrics_port_only_from_the_monitoring_namespace(rendering):
    objects = render(rendering)
    container = server_container(objects)
    metrics = {"metrics", container_port(container, "metrics")}
    policy = one(objects, "NetworkPolicy")["spec"]
    rules = [r for r in policy["ingress"] if {p["port"] for p in r.get("ports", [])} & metrics]
    assert rules, "the metrics port is not let in at all"
    for rule in rules:
        assert {p["port"] for p in rule["ports"]} <= metrics, "metrics shares a rule with other ports"
        assert rule.get("from"), "a rule without `from` admits every source"
        for peer in rule["from"]:
            assert peer == {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
            }, f"metrics let in from {peer}"
    # A rule without ports would admit every port, metrics included.
    assert all(r.get("ports") for r in policy["ingress"]), "a rule admits every port"


def tls_objects():
    return render("cpu+tls")


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_tls_component_mounts_the_secret_directory_and_sets_tls():
    objects = tls_objects()
    container = server_container(objects)
    env = env_of(container)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "oxserve-tls"
    # subPath mounts are never updated by the kubelet: rotation needs the
    # directory.
    assert "subPath" not in mounts["tls"] and mounts["tls"]["readOnly"] is True
    for key in ("tls_cert", "tls_key"):
        path = effective_setting(objects, key)
        assert path.startswith(mounts["tls"]["mountPath"].rstrip("/") + "/"), f"{key} {path}"
    assert env["OXSERVE_METRICS_TLS"] == "true"
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations.get("prometheus.io/scheme") == "https"
    health = port_of(effective_setting(objects, "health_address"))
    assert container_port(container, "health") == health == probe_port(objects)
    assert health not in {p["port"] for p in one(objects, "Service")["spec"]["ports"]}, (
        "the plaintext health listener is for the kubelet, not the Service"
    )
    transports = [o for o in objects if o["kind"] == "ServersTransport"]
    assert [t["metadata"]["name"] for t in transports] == ["oxserve-tls"]
    assert transports[0]["spec"]["rootCAs"] == [{"secret": "oxserve-tls"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(address: str, service: str, *tls: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BINARY), "health", "--addr", address, "--service", service, "--timeout", "2s", *tls],
        capture_output=True, text=True, timeout=30,
    )


def make_certificates(directory: Path) -> None:
    """tls.crt / tls.key / ca.crt as cert-manager writes them."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"),
        "-days", "1", "-subj", "/CN=deploy-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    run("req", *ec, "-keyout", str(directory / "tls.key"), "-out", str(directory / "tls.csr"),
        "-subj", "/CN=oxserve.oxserve.svc")
    (directory / "ext").write_text(
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:oxserve.oxserve.svc,IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(directory / "tls.csr"), "-CA", str(directory / "ca.crt"),
        "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-out", str(directory / "tls.crt"),
        "-days", "1", "-extfile", str(directory / "ext"))


def test_tls_component_probes_pass_on_the_health_listener():
    """The rendered TLS settings, with the Secret's mount replaced by a
    temporary directory and the ports by free loopback ones: the probes'
    services answer SERVING in plaintext on the health listener; the gRPC
    port speaks TLS only."""
    if not BINARY.is_file():
        pytest.skip(f"{BINARY} missing")
    objects = tls_objects()
    container = server_container(objects)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")["mountPath"]
    with tempfile.TemporaryDirectory(prefix="oxserve-tls-deploy-") as tmp:
        make_certificates(Path(tmp))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OXSERVE_")}
        for name, value in env_of(container).items():
            if name.startswith("OXSERVE_") and value is not None:
                env[name] = value.replace(mount, tmp)
        grpc, health_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        env["OXSERVE_HEALTH_ADDRESS"] = health_address
        log = open(Path(tmp, "server.log"), "w+")
        proc = subprocess.Popen(
            [str(BINARY), "serve", "--model-repository", str(MODELS), "--grpc-address", grpc,
             "--http-address", f"127.0.0.1:{free_port()}",
             "--metrics-address", f"127.0.0.1:{free_port()}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while health(health_address, READINESS_SERVICE).returncode != 0:
                assert proc.poll() is None, f"server exited: {log.seek(0) or log.read()}"
                assert time.monotonic() < deadline, "not SERVING on the health listener in 60 s"
                time.sleep(0.3)
            assert health(health_address, LIVENESS_SERVICE).returncode == 0
            assert health(grpc, READINESS_SERVICE).returncode != 0, "plaintext on the TLS port"
            secure = health(grpc, READINESS_SERVICE, "--tls-ca", str(Path(tmp, "ca.crt")))
            assert secure.returncode == 0, secure.stdout + secure.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
