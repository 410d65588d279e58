"""Helpers shared by the deployment checks: paths, rendering the kustomize
overlays, reading the rendered objects, and what the server binary says it
accepts (`oxserve serve --help`), so that the checks follow the server when
keys are added instead of repeating a list of them here."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
# The server binary whose CLI the manifests must match; scripts/check-deploy.sh
# may point elsewhere with OXSERVE_BIN.
BINARY = Path(os.environ.get("OXSERVE_BIN", ROOT / "target" / "debug" / "oxserve"))

OVERLAYS = ("cpu", "gpu")
COMPONENTS = ("inflight-hpa", "models-pvc", "tls")
# The optional monitoring component (ServiceMonitor, PrometheusRule, Grafana
# dashboard) lives beside the others' folder, not in it; render it as
# "cpu+monitoring". Checked by test_monitoring.py and test_dashboard.py, with
# each overlay (MONITORED), not part of RENDERINGS.
MONITORING = K8S / "monitoring"
MONITORED = ("cpu+monitoring", "gpu+monitoring")
# Every rendering the checks look at: each overlay, and the default overlay
# with each optional component.
RENDERINGS = OVERLAYS + tuple(f"cpu+{c}" for c in COMPONENTS)

# The two health services the server answers for (server/health.rs):
# "" is the process (liveness), the inference service is readiness.
LIVENESS_SERVICE = ""
READINESS_SERVICE = "inference.GRPCInferenceService"

# Kinds of the Kubernetes core API that the base must contain; IngressRoute is
# Traefik's CRD and is checked separately.
CORE_KINDS = {
    "Namespace",
    "ConfigMap",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
CRD_KINDS = {"IngressRoute"}
# Traefik CRDs that only an optional component adds (k8s/components/tls:
# how Traefik re-encrypts to the pods).
OPTIONAL_CRD_KINDS = {"ServersTransport"}


class RenderError(RuntimeError):
    pass


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise RenderError("kubectl is not on PATH (needed for `kubectl kustomize`)")
    return path


def _kustomize(directory: Path) -> str:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def component_dir(component: str) -> Path:
    """The folder of an optional component: k8s/components/<name>, or
    k8s/monitoring for "monitoring"."""
    return MONITORING if component == "monitoring" else K8S / "components" / component


@functools.lru_cache(maxsize=None)
def render_text(rendering: str) -> str:
    """The YAML `kubectl kustomize` renders for an overlay ("cpu") or an
    overlay with a component ("cpu+models-pvc")."""
    overlay, _, component = rendering.partition("+")
    if not component:
        return _kustomize(K8S / "overlays" / overlay)
    # Components are used from a kustomization; kustomize wants relative
    # paths to them, so the temporary one points back by relative path.
    with tempfile.TemporaryDirectory(prefix="oxserve-kustomize-") as tmp:
        rel = lambda p: os.path.relpath(p, tmp)  # noqa: E731
        Path(tmp, "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n"
            "kind: Kustomization\n"
            f"resources:\n  - {rel(K8S / 'overlays' / overlay)}\n"
            f"components:\n  - {rel(component_dir(component))}\n"
        )
        return _kustomize(Path(tmp))


def render(rendering: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render_text(rendering)) if doc]


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def server_container(objects: list[dict]) -> dict:
    """The container running `oxserve serve` (the one with a gRPC port)."""
    containers = pod_spec(objects)["containers"]
    found = [
        c for c in containers if any(p.get("name") == "grpc" for p in c.get("ports", []))
    ]
    assert len(found) == 1, "expected exactly one container with a port named 'grpc'"
    return found[0]


def container_port(container: dict, name: str) -> int:
    for port in container.get("ports", []):
        if port.get("name") == name:
            return port["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {name!r}")


def labels_match(selector: dict, labels: dict) -> bool:
    """matchLabels semantics (the manifests use no matchExpressions)."""
    assert not selector.get("matchExpressions"), "matchExpressions not handled here"
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


# --- the server's command line -------------------------------------------


@dataclass
class Option:
    flag: str  # "--grpc-address"
    takes_value: bool
    key: str | None = None  # "grpc_address", from "[key: ..."
    env: str | None = None  # "OXSERVE_GRPC_ADDRESS"
    default: str | None = None


@dataclass
class ServeCli:
    options: dict[str, Option] = field(default_factory=dict)
    env_names: set[str] = field(default_factory=set)
    subcommands: set[str] = field(default_factory=set)

    @property
    def keys(self) -> dict[str, Option]:
        """Config keys by name: the snake_case form of every value flag,
        as `--config FILE` accepts them in TOML."""
        return {o.key: o for o in self.options.values() if o.key}


def _run_help(*args: str) -> str:
    if not BINARY.is_file():
        raise FileNotFoundError(f"{BINARY} not found: build it with `cargo build --bin oxserve`")
    proc = subprocess.run(
        [str(BINARY), *args, "--help"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


_OPTION = re.compile(r"^\s+(?:-\w, )?--([a-z][a-z0-9-]*)(?: <[^>]+>)?")
_KEY = re.compile(r"\[key: (\w+)")
_ENV = re.compile(r"\benv: (OXSERVE_\w+)")
# The default runs to the annotation's closing bracket, which ends the text
# or is followed by clap's own "[possible values: ...]".
_DEFAULT = re.compile(r"\bdefault: (.*?)\](?:\s*\[|\s*$)")


@functools.lru_cache(maxsize=None)
def serve_cli() -> ServeCli:
    """Parses `oxserve --help` and `oxserve serve --help`."""
    cli = ServeCli()
    top = _run_help()
    in_commands = False
    for line in top.splitlines():
        if line.startswith("Commands:"):
            in_commands = True
            continue
        if in_commands:
            m = re.match(r"^\s+([a-z][a-z0-9-]*)\s", line + " ")
            if not m:
                break
            if m.group(1) != "help":
                cli.subcommands.add(m.group(1))

    text = _run_help("serve")
    cli.env_names = set(re.findall(r"\bOXSERVE_[A-Z0-9_]+\b", text))
    current: Option | None = None
    description: list[str] = []

    def finish() -> None:
        if current is None:
            return
        text = " ".join(description)
        key, env, default = _KEY.search(text), _ENV.search(text), _DEFAULT.search(text)
        if key:
            current.key = key.group(1)
            current.env = env.group(1) if env else None
            current.default = default.group(1) if default else None
        elif current.takes_value and current.flag != "--config":
            # A flag without the annotation still names its key (config.rs).
            current.key = current.flag[2:].replace("-", "_")
        cli.options[current.flag] = current

    in_options = False
    for line in text.splitlines():
        if line.startswith("Options:"):
            in_options = True
            continue
        if not in_options:
            continue
        m = _OPTION.match(line)
        if m:
            finish()
            flag = "--" + m.group(1)
            current = Option(flag=flag, takes_value="<" in m.group(0))
            description = [line[m.end() :].strip()]
        elif current is not None:
            description.append(line.strip())
    finish()
    return cli


def parse_serve_args(args: list[str]) -> tuple[str, dict[str, str]]:
    """Splits container args into the subcommand and `{--flag: value}`;
    raises on anything `oxserve serve` would reject."""
    cli = serve_cli()
    assert args, "container args are empty: the image's entrypoint needs a subcommand"
    command, rest = args[0], args[1:]
    assert command in cli.subcommands, f"{command!r} is not an oxserve subcommand {cli.subcommands}"
    flags: dict[str, str] = {}
    i = 0
    while i < len(rest):
        token = rest[i]
        assert token.startswith("--"), f"unexpected argument {token!r} (serve takes no positionals)"
        name, eq, value = token.partition("=")
        option = cli.options.get(name)
        assert option is not None, (
            f"{name} is not a flag of `oxserve serve` (it lists {sorted(cli.options)})"
        )
        if option.takes_value and not eq:
            assert i + 1 < len(rest), f"{name} needs a value"
            value = rest[i + 1]
            i += 1
        flags[name] = value
        i += 1
    return command, flags


# --- configuration as the server will see it --------------------------------


def config_file(objects: list[dict]) -> tuple[str, dict]:
    """(path inside the container, parsed TOML) of the `--config` file."""
    path, text = config_text(objects)
    return path, tomllib.loads(text)


def config_text(objects: list[dict]) -> tuple[str, str]:
    """(path inside the container, contents) of the `--config` file, which
    must come from a mounted ConfigMap of the rendering."""
    container = server_container(objects)
    _, flags = parse_serve_args(container.get("args", []))
    assert "--config" in flags, "the server container passes no --config"
    path = flags["--config"]
    volumes = {v["name"]: v for v in pod_spec(objects).get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            volume = volumes[mount["name"]]
            assert "configMap" in volume, f"--config {path} is not on a ConfigMap volume"
            key = path[len(prefix) :]
            cm_name = volume["configMap"]["name"]
            cms = [
                o
                for o in objects
                if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name
            ]
            assert cms, f"ConfigMap {cm_name} (volume {mount['name']}) is not in the rendering"
            data = cms[0].get("data", {})
            assert key in data, f"ConfigMap {cm_name} has no key {key!r} for --config {path}"
            return path, data[key]
    raise AssertionError(f"--config {path} is under no volume mount of the container")


def effective_setting(objects: list[dict], key: str) -> str | None:
    """A setting as the server resolves it: flag > OXSERVE_* env > config
    file > built-in default (from `serve --help`)."""
    cli = serve_cli()
    option = cli.keys[key]
    container = server_container(objects)
    _, flags = parse_serve_args(container.get("args", []))
    if option.flag in flags:
        return flags[option.flag]
    for env in container.get("env", []):
        if env["name"] == option.env:
            assert "value" in env, f"{option.env} must be a literal value to be checked"
            return env["value"]
    _, config = config_file(objects)
    if key in config:
        return str(config[key])
    return option.default


_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0,
    "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0,
}


def duration_seconds(text: str) -> float:
    """humantime durations as the server parses them: "30s", "1m 30s", "500ms"."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-zµ]+)", text.strip())
    assert parts and "".join(f"{n}{u}" for n, u in parts) == re.sub(r"\s+", "", text), (
        f"cannot parse duration {text!r}"
    )
    total = 0.0
    for number, unit in parts:
        assert unit in _DURATION_UNITS, f"unknown duration unit {unit!r} in {text!r}"
        total += float(number) * _DURATION_UNITS[unit]
    return total


def port_of(address: str) -> int:
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), f"{address!r} is not HOST:PORT"
    return int(port)


def host_of(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


# --- TLS (k8s/components/tls) -------------------------------------------------


def tls_enabled(objects: list[dict]) -> bool:
    """Whether the rendering turns TLS on (tls_cert set anywhere)."""
    return effective_setting(objects, "tls_cert") not in (None, "", "(plaintext)")


def probe_port(objects: list[dict]) -> int:
    """The port the kubelet's gRPC probes must use: the plaintext
    health-only listener when health_address is set, else the gRPC port."""
    health = effective_setting(objects, "health_address")
    if health not in (None, "", "(off)"):
        return port_of(health)
    return port_of(effective_setting(objects, "grpc_address"))
