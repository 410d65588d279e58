"""The manifests against the real server: the container's args, environment
and config file use only what `oxserve serve` accepts; the server starts
with the rendered config file; every probe passes against it with the
service name it asks for; ports agree; the grace period outlasts the drain.

One server process (target/debug/oxserve, or OXSERVE_BIN) is started for
the module on 127.0.0.1 and an ephemeral port, with the ConfigMap's
config.toml; only the address and the model repository are overridden by
flags, as the flags beat the file."""

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
    OVERLAYS,
    READINESS_SERVICE,
    RENDERINGS,
    ROOT,
    config_file,
    config_text,
    container_port,
    duration_seconds,
    effective_setting,
    host_of,
    one,
    parse_serve_args,
    pod_spec,
    port_of,
    probe_port,
    render,
    serve_cli,
    server_container,
)

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
EXPECTED_SERVICE = {
    "startupProbe": READINESS_SERVICE,
    "readinessProbe": READINESS_SERVICE,
    "livenessProbe": LIVENESS_SERVICE,
}
READY_WITHIN = 60.0  # seconds; the example models load in about one
MODELS = ROOT / "examples" / "models"
GRPCURL = Path(os.environ.get("GRPCURL", ROOT / ".oxserve" / "bin" / "grpcurl"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(address: str, service: str, timeout: str = "2s") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BINARY), "health", "--addr", address, "--service", service, "--timeout", timeout],
        capture_output=True,
        text=True,
        timeout=30,
    )


class Server:
    def __init__(self, config_text: str):
        self.tmp = tempfile.TemporaryDirectory(prefix="oxserve-deploy-")
        self.config = Path(self.tmp.name, "config.toml")
        self.config.write_text(config_text)
        self.log = open(Path(self.tmp.name, "server.log"), "w+")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Loopback and a free port: checks may run beside other servers.
        self.metrics_address = f"127.0.0.1:{free_port()}"
        self.http_address = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OXSERVE_")}
        self.proc = subprocess.Popen(
            [
                str(BINARY), "serve",
                "--config", str(self.config),
                "--model-repository", str(MODELS),
                "--grpc-address", self.address,
                "--metrics-address", self.metrics_address,
                "--http-address", self.http_address,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the server exited with {self.proc.returncode}:\n{self.output()}"
                )
            if health(self.address, READINESS_SERVICE, "1s").returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready within {READY_WITHIN}s:\n{self.output()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.tmp.cleanup()


@pytest.fixture(scope="module", params=OVERLAYS)
def served(request):
    """(overlay's objects, running server started with its config file)."""
    objects = render(request.param)
    _, text = config_text(objects)
    server = Server(text)
    try:
        server.wait_ready()
        yield objects, server
    finally:
        server.stop()


def test_server_accepts_the_config_and_serves(served):
    """The fixture started the server with the ConfigMap's file (it rejects
    unknown keys and bad values) and it became ready."""
    _, server = served
    assert server.proc.poll() is None


@pytest.mark.parametrize("probe", PROBES)
def test_probe_passes_against_the_server(served, probe):
    objects, server = served
    spec = server_container(objects).get(probe)
    assert spec is not None, f"no {probe}"
    assert "grpc" in spec, f"{probe} is not a gRPC probe"
    service = spec["grpc"].get("service", "")
    assert service == EXPECTED_SERVICE[probe]
    result = health(server.address, service)
    assert result.returncode == 0, (
        f"{probe}: `oxserve health --service {service!r}` failed: {result.stdout}{result.stderr}"
    )
    assert "SERVING" in result.stdout


def test_unknown_service_would_fail_a_probe(served):
    """The check above can fail: a name the server does not know is refused."""
    _, server = served
    assert health(server.address, "inference.NoSuchService").returncode != 0


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_probe_ports_match_the_grpc_port(rendering):
    objects = render(rendering)
    container = server_container(objects)
    address = effective_setting(objects, "grpc_address")
    # The kubelet dials the pod IP: loopback would fail every probe.
    assert host_of(address) in ("0.0.0.0", "::"), f"grpc_address {address} is not on the pod IP"
    grpc_port = container_port(container, "grpc")
    assert grpc_port == port_of(address), (
        f"container port grpc {grpc_port} != grpc_address {address}"
    )
    # With TLS (k8s/components/tls) the probes use the plaintext
    # health-only listener, since the kubelet cannot speak TLS to them.
    expected = probe_port(objects)
    for probe in PROBES:
        port = container[probe]["grpc"]["port"]
        assert isinstance(port, int), f"{probe}: gRPC probes take a port number, not a name"
        assert port == expected, f"{probe} port {port} != {expected} (grpc or health_address)"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 60


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_grace_period_outlasts_the_drain(rendering):
    objects = render(rendering)
    pod = pod_spec(objects)
    drain = duration_seconds(effective_setting(objects, "drain_timeout"))
    pre_stop = server_container(objects).get("lifecycle", {}).get("preStop", {})
    sleep = pre_stop.get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    assert grace > sleep + drain, (
        f"terminationGracePeriodSeconds {grace} <= preStop {sleep}s + drain_timeout {drain}s"
    )


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_args_env_and_config_keys_are_known_to_the_server(rendering):
    objects = render(rendering)
    cli = serve_cli()
    container = server_container(objects)
    command, flags = parse_serve_args(container.get("args", []))
    assert command == "serve"
    assert not container.get("command"), "keep the image's entrypoint (the oxserve binary)"
    for env in container.get("env", []):
        if env["name"].startswith("OXSERVE_"):
            assert env["name"] in cli.env_names, (
                f"{env['name']} is not a variable `oxserve serve --help` documents; "
                "the server would ignore it"
            )
    _, config = config_file(objects)
    unknown = set(config) - set(cli.keys)
    assert not unknown, f"config file keys the server rejects: {sorted(unknown)}"
    # Every setting the manifests pin resolves to something sensible.
    for key in ("model_repository", "grpc_address", "drain_timeout"):
        assert effective_setting(objects, key), key


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_model_repository_is_the_models_mount(rendering):
    objects = render(rendering)
    repository = effective_setting(objects, "model_repository").rstrip("/")
    mounts = {m["mountPath"].rstrip("/"): m for m in server_container(objects)["volumeMounts"]}
    assert repository in mounts, f"model_repository {repository} is not a volume mount"
    assert mounts[repository]["name"] == "models"


def test_dockerfile_healthcheck_passes_against_the_server(served):
    """The image's HEALTHCHECK command, with the binary of this run, finds
    the server on its moved port through the server's own settings: once
    from OXSERVE_GRPC_ADDRESS, once from the config file OXSERVE_CONFIG names
    (as a container set up either way would run it)."""
    from test_dockerfile import final_stages

    _, server = served
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OXSERVE_")}
    config = Path(server.tmp.name, "moved.toml")
    config.write_text(f'grpc_address = "{server.address}"\n')
    for stage in final_stages():
        argv = stage.healthcheck_cmd()
        assert argv[0].endswith("/oxserve")
        for env in ({"OXSERVE_GRPC_ADDRESS": server.address}, {"OXSERVE_CONFIG": str(config)}):
            result = subprocess.run(
                [str(BINARY), *argv[1:]],
                capture_output=True, text=True, timeout=30, env={**clean, **env},
            )
            assert result.returncode == 0, f"{stage.name}: {argv} {env}: {result.stdout}{result.stderr}"
            assert result.stdout.strip() == "inference.GRPCInferenceService: SERVING"


def test_ingress_routes_every_service_the_server_offers(served):
    """`grpcurl list` through reflection: each service is routed by the
    IngressRoute (a prefix of /<service>/)."""
    from test_ingressroute import REQUIRED_PREFIXES, rule_matchers

    if not GRPCURL.is_file():
        pytest.skip(f"{GRPCURL} missing (scripts/install-grpcurl.sh)")
    objects, server = served
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", server.address, "list"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert "inference.GRPCInferenceService" in services
    prefixes = set()
    for route in one(objects, "IngressRoute")["spec"]["routes"]:
        for name, args in rule_matchers(route["match"]):
            if name == "PathPrefix":
                prefixes.update(args)
    missing = {s for s in services if f"/{s}/" not in prefixes}
    assert not missing, f"served but not routed through Traefik: {sorted(missing)}"
    assert {f"/{s}/" for s in services} <= REQUIRED_PREFIXES | prefixes
