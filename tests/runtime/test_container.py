"""The CPU image, run as production runs it (read-only root, no
capabilities, no privilege escalation, UID 10001, models mounted read-only):
its HEALTHCHECK, answers through grpcurl and tritonclient, a drain under
load at `docker stop`, containers that cannot serve saying why, and the
KServe ClusterServingRuntime's container as KServe would start it.

scripts/check-runtime.sh builds the image (scripts/build-images.sh) and
runs this module; OXSERVE_IMAGE names the image."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time

import numpy as np
import pytest
import yaml

from runtime import (
    EXAMPLES,
    GREETING,
    GRPCURL,
    IMAGE,
    INFERENCE_SERVICE,
    ROOT,
    TEST_MODELS,
    Container,
    docker,
    free_port,
    grpcurl,
    grpcurl_infer,
    health,
    infer_intent,
    infer_mlp,
    intent_request,
    local_session,
    metric,
    model_repository,
    raw_bytes_elements,
    spin,
    triton,
    wait_until,
)

# The image's HEALTHCHECK checks every 10 s: the first result comes after
# one interval.
HEALTHY_WITHIN = 60
# Faster health checks for the containers expected to fail, whose status
# would otherwise stay "starting" for the 60 s start period. Only timing
# changes: the check's command stays the image's.
FAST_CHECKS = ("--health-interval", "1s", "--health-start-period", "1s", "--health-retries", "1")


@pytest.fixture(scope="module")
def image():
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is not built: run scripts/build-images.sh")
    return json.loads(docker("image", "inspect", IMAGE).stdout)[0]


@pytest.fixture(scope="module")
def served(image):
    """The image serving examples/models, as in production, with POD_NAME
    set as the downward API sets it in k8s/base/deployment.yaml."""
    container = Container.run(str(EXAMPLES), env={"POD_NAME": "oxserve-test-0"})
    try:
        container.wait_health("healthy", HEALTHY_WITHIN)
        yield container
    finally:
        container.remove()


def test_image_runs_as_10001_and_checks_its_own_address(image):
    config = image["Config"]
    assert config["User"] == "10001:10001"
    test = config["Healthcheck"]["Test"]
    assert test[0] == "CMD" and test[2] == "health"
    # No fixed address: `oxserve health` reads the server's own settings.
    assert "--addr" not in test, test


def test_healthcheck_turns_healthy_on_a_moved_port(served):
    health = served.health()
    assert health["Status"] == "healthy"
    # The port was moved with OXSERVE_GRPC_ADDRESS (host network: a free
    # port): the HEALTHCHECK followed it.
    assert not served.grpc.endswith(":8001")
    assert health["Log"][-1]["ExitCode"] == 0
    assert health["Log"][-1]["Output"].strip() == f"{INFERENCE_SERVICE}: SERVING"
    pid = served.inspect()["State"]["Pid"]
    uids = open(f"/proc/{pid}/status").read().split("Uid:")[1].split("\n")[0].split()
    assert set(uids) == {"10001"}, uids


def test_logs_are_clean_on_a_read_only_root(served):
    """No warning at start: in particular none from ONNX Runtime about
    persisting a telemetry id on the read-only root."""
    logs = served.logs()
    assert "model version loaded" in logs
    for word in ("WARN", "ERROR", "telemetry", "deviceid", "Read-only"):
        assert word not in logs, f"{word!r} in the logs:\n{logs}"


@pytest.mark.skipif(not GRPCURL.is_file(), reason="grpcurl not installed (scripts/install-grpcurl.sh)")
def test_grpcurl_reflection_and_both_models(served):
    listed = grpcurl(served.grpc, "list")
    assert listed.returncode == 0, listed.stderr
    assert {
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(listed.stdout.split())

    answer = grpcurl_infer(served.grpc, intent_request([GREETING]))
    label = next(i for i, o in enumerate(answer["outputs"]) if o["name"] == "label")
    raw = base64.b64decode(answer["rawOutputContents"][label])
    assert raw_bytes_elements(raw) == [b"greeting"]
    assert answer["parameters"]["served_by"]["stringParam"] == "oxserve-test-0"

    request = json.loads((ROOT / "tests" / "interop" / "requests" / "mlp.json").read_text())
    answer = grpcurl_infer(served.grpc, request)
    [output] = answer["outputs"]
    assert output["name"] == "output" and output["shape"] == ["1", "10"]
    values = np.frombuffer(base64.b64decode(answer["rawOutputContents"][0]), dtype="<f4")
    assert values.shape == (10,) and abs(values.sum() - 1) < 1e-4  # softmax


def test_tritonclient_answers_match_onnxruntime(served):
    client = triton(served.grpc)
    try:
        assert client.is_server_ready()
        labels, probabilities, who = infer_intent(client, [GREETING, "bye, see you later"])
        assert labels[0] == "greeting"
        assert who == "oxserve-test-0"
        reference = local_session(EXAMPLES / "intent").run(
            None, {"text": np.array([[GREETING], ["bye, see you later"]], dtype=object)}
        )
        assert labels == [str(v) for v in reference[0]]
        np.testing.assert_allclose(probabilities, reference[1], rtol=1e-5, atol=1e-6)

        x = np.random.default_rng(11).random((3, 784), dtype=np.float32)
        output, _ = infer_mlp(client, x)
        expected = local_session(EXAMPLES / "mlp").run(None, {"input": x})[0]
        np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)
    finally:
        client.close()


def test_docker_stop_drains_in_flight_requests_and_exits_zero(image):
    """`docker stop` under load: the requests in flight when SIGTERM comes
    all complete, and the container exits 0 well inside Docker's grace
    period (10 s unless told otherwise)."""
    repo = model_repository(EXAMPLES / "mlp", TEST_MODELS / "spin")
    container = Container.run(repo.name)
    load_stop = False
    try:
        container.wait_health("healthy", HEALTHY_WITHIN)
        client = triton(container.grpc)
        x = np.ones((1, 784), dtype=np.float32)

        def load():
            # Background traffic on another connection: answered until the
            # shutdown, then refused (that is what the drain is for).
            other = triton(container.grpc)
            outcomes = []
            while not load_stop:
                try:
                    infer_mlp(other, x)
                    outcomes.append("ok")
                except Exception as e:  # noqa: BLE001 - recorded, checked below
                    outcomes.append(str(e))
                    break
            other.close()
            return outcomes

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            background = [pool.submit(load) for _ in range(2)]
            # Three requests of about 0.45 s each (one idle core) on one
            # worker: while the first runs, the others wait in the queue.
            in_flight = [pool.submit(spin, client, 4000) for _ in range(3)]
            # All three in the server (one running, two queued) before
            # SIGTERM: a request the client has not sent yet is not in
            # flight, and on a busy machine the third can lag behind.
            wait_until(
                lambda: (metric(container.metrics, "oxserve_inflight_requests", {"model": "spin"}) or 0) >= 3,
                30, "spin requests in flight",
            )
            started = time.monotonic()
            stopped = docker("stop", container.id, timeout=60)
            took = time.monotonic() - started
            results = [f.result(timeout=60) for f in in_flight]
            load_stop = True
            outcomes = [f.result(timeout=60) for f in background]
        client.close()
        state = container.inspect()["State"]
        assert stopped.returncode == 0
        assert state["ExitCode"] == 0, container.logs()
        assert not state["OOMKilled"]
        # Exit code 0, not 137: Docker did not have to kill it at 10 s.
        assert took < 8, f"docker stop took {took:.1f} s (Docker kills at 10 s)"
        for result in results:
            assert result.as_numpy("OUTPUT0") is not None
        assert all(o.count("ok") > 0 for o in outcomes), outcomes
        logs = container.logs()
        assert "draining in-flight requests" in logs and "stopped" in logs, logs
        assert "drain timeout" not in logs
        print(f"docker stop with 3 in-flight requests: {took:.2f} s, exit code 0; "
              f"background requests answered: {sum(o.count('ok') for o in outcomes)}")
    finally:
        load_stop = True
        container.remove()
        repo.cleanup()


def test_a_container_without_models_says_why(image):
    container = Container.run(None, options=FAST_CHECKS)
    try:
        health = container.wait_health("unhealthy", 60)
        output = health["Log"][-1]["Output"]
        assert output.strip() == (
            f"{INFERENCE_SERVICE}: NOT_SERVING (the model repository /models holds no models)"
        ), output
        logs = container.logs()
        assert "holds no models" in logs, logs
        # The start-up warning gives the same reason, not a load failure.
        assert 'NOT ready (strict_readiness = true); what loaded serves reason=the model repository /models holds no models' in logs, logs
        assert "failed to load" not in logs, logs
    finally:
        container.remove()


def test_a_container_with_a_broken_model_says_why(image):
    repo = model_repository(EXAMPLES / "intent", TEST_MODELS / "broken")
    container = Container.run(repo.name, options=FAST_CHECKS)
    try:
        health = container.wait_health("unhealthy", 60)
        output = health["Log"][-1]["Output"]
        assert output.startswith(
            f"{INFERENCE_SERVICE}: NOT_SERVING (model 'broken' version 1 failed to load: "
        ), output
        logs = container.logs()
        assert "model version failed to load" in logs and "broken" in logs, logs
        # The other model serves all the same.
        client = triton(container.grpc)
        assert infer_intent(client, [GREETING])[0] == ["greeting"]
        client.close()
    finally:
        container.remove()
        repo.cleanup()


def test_a_config_file_named_by_oxserve_config_moves_the_port_for_both(image, tmp_path):
    """With the port in a config file (OXSERVE_CONFIG), `serve` and the
    HEALTHCHECK agree on it."""
    ports = free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'grpc_address = "127.0.0.1:{ports[0]}"\nmetrics_address = "127.0.0.1:{ports[1]}"\n'
    )
    config.chmod(0o644)
    tmp_path.chmod(0o755)
    container = Container.run(
        str(EXAMPLES),
        options=("-v", f"{tmp_path}:/etc/oxserve:ro"),
        env={"OXSERVE_CONFIG": "/etc/oxserve/config.toml"},
        ports=ports,
    )
    try:
        health = container.wait_health("healthy", HEALTHY_WITHIN)
        assert health["Log"][-1]["Output"].strip() == f"{INFERENCE_SERVICE}: SERVING"
    finally:
        container.remove()


# --- KServe -----------------------------------------------------------------


def kserve_runtime() -> dict:
    return yaml.safe_load((ROOT / "k8s" / "kserve" / "clusterservingruntime.yaml").read_text())


def test_the_kserve_runtime_serves_as_kserve_starts_it(image, tmp_path):
    """The ClusterServingRuntime's container as KServe runs it: its args
    and env, its security context, the model repository where the storage
    initializer puts it (/mnt/models, read-only). Only the ports move (host
    network). Its probes, run as the kubelet runs gRPC probes, pass, and
    inference answers."""
    [spec] = kserve_runtime()["spec"]["containers"]
    grpc_port, metrics_port = free_port(), free_port()
    args = list(spec["args"])
    for flag, port in (("--grpc-address", grpc_port), ("--metrics-address", metrics_port)):
        i = args.index(flag)
        host, _ = args[i + 1].rsplit(":", 1)
        assert host == "0.0.0.0"
        args[i + 1] = f"127.0.0.1:{port}"
    env = {}
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
            env[var["name"]] = "oxserve-examples-predictor-0"
    security = spec["securityContext"]
    options = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    assert security["allowPrivilegeEscalation"] is False
    container = Container.run(
        str(EXAMPLES), env=env, options=tuple(options), mount="/mnt/models",
        args=tuple(args), ports=(grpc_port, metrics_port),
    )
    try:
        address = f"127.0.0.1:{grpc_port}"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = spec[probe]["grpc"]
            assert grpc["port"] == int(spec["ports"][0]["containerPort"])
            wait_until(
                lambda: health(address, grpc.get("service", "")).returncode == 0,
                HEALTHY_WITHIN, f"{probe} ({grpc.get('service', '')!r}) to pass",
            )
        client = triton(address)
        labels, _, who = infer_intent(client, [GREETING])
        client.close()
        assert labels == ["greeting"] and who == "oxserve-examples-predictor-0"
        assert metric(f"127.0.0.1:{metrics_port}", "oxserve_requests_total", {"model": "intent"}) == 1
    finally:
        container.remove()
