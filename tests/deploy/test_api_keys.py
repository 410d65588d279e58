"""The optional API-key component (k8s/components/api-keys): the Secret
holding the key file, mounted so that rotations reach the server, the flag
pointing at it, health left open for the probes, and the shipped file,
which holds no key, refused by the real server rather than serving open."""

import subprocess
from pathlib import Path

from deploy import (
    BINARY,
    ROOT,
    component_dir,
    effective_setting,
    one,
    parse_serve_args,
    pod_spec,
    render,
    server_container,
)

RENDERING = "cpu+api-keys"


def key_file_mount(objects):
    """(mount, volume) the --api-keys file is read from."""
    container = server_container(objects)
    _, flags = parse_serve_args(container.get("args", []))
    assert "--api-keys" in flags, "the component sets no --api-keys"
    path = flags["--api-keys"]
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    for mount in container["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            return path[len(prefix) :], mount, volumes[mount["name"]]
    raise AssertionError(f"--api-keys {path} is under no volume mount")


def test_the_key_file_comes_from_the_secret_and_can_rotate():
    objects = render(RENDERING)
    key, mount, volume = key_file_mount(objects)
    assert "secret" in volume, volume
    secret = one(objects, "Secret")
    # No hash suffix: a changed key updates the Secret in place, and the
    # mounted file follows without rolling the pods.
    assert volume["secret"]["secretName"] == secret["metadata"]["name"] == "oxserve-api-keys"
    assert key in secret["data"], f"the Secret has no key {key!r}"
    # A subPath mount is never updated by the kubelet.
    assert "subPath" not in mount and mount.get("readOnly") is True
    # Readable by the server's group (fsGroup) only.
    assert volume["secret"].get("defaultMode") == 0o440


def test_health_stays_open_for_the_probes():
    objects = render(RENDERING)
    groups = effective_setting(objects, "protected_groups")
    assert groups is not None
    named = [g.strip() for g in groups.strip("[]").split(",")]
    assert "health" not in named, f"probes cannot send a key, but health is protected: {groups}"
    container = server_container(objects)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" in container[probe], probe


def test_the_rest_of_the_overlay_is_unchanged():
    plain = server_container(render("cpu"))
    keyed = server_container(render(RENDERING))
    assert keyed["args"][: len(plain["args"])] == plain["args"]
    assert keyed["volumeMounts"][: len(plain["volumeMounts"])] == plain["volumeMounts"]


def test_the_shipped_file_holds_no_key_and_the_server_refuses_it():
    shipped = component_dir("api-keys") / "api-keys"
    lines = [line.strip() for line in shipped.read_text().splitlines()]
    assert all(not line or line.startswith("#") for line in lines), "no key may ship in Git"
    proc = subprocess.run(
        [
            str(BINARY),
            "serve",
            "--model-repository",
            str(ROOT / "examples" / "models"),
            "--grpc-address",
            "127.0.0.1:0",
            "--http",
            "false",
            "--metrics",
            "false",
            "--api-keys",
            str(shipped),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0, "the server started with a key file holding no key"
    assert "api_keys" in proc.stderr and "holds no key" in proc.stderr, proc.stderr
