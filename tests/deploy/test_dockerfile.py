"""The Dockerfiles, checked statically: hadolint, then the points the images
must meet, cross-checked against the workspace (`cargo metadata`),
requirements.txt, the server's CLI and k8s/. `Dockerfile` has the CPU image
(default target) and the example models; `Dockerfile.gpu` the GPU image.
scripts/build-images.sh and tests/runtime build and run them for real."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from deploy import ROOT, pod_spec, port_of, render, serve_cli, server_container

DOCKERFILE = ROOT / "Dockerfile"
GPU_DOCKERFILE = ROOT / "Dockerfile.gpu"
DOCKERFILES = (DOCKERFILE, GPU_DOCKERFILE)
DOCKERIGNORE = ROOT / ".dockerignore"
# The server images, each the default (last) target of its file.
FINAL = {"cpu": DOCKERFILE, "gpu": GPU_DOCKERFILE}
BUILD_TOOLS = re.compile(
    r"\b(cargo|rustc|rustup|gcc|g\+\+|cc|clang|make|cmake|pip|pip3|build-essential)\b"
)
BUILD_IMAGES = re.compile(r"^(docker\.io/)?(library/)?(rust|python|golang|gcc|buildpack-deps)[:@]|devel")


@dataclass
class Stage:
    name: str
    base: str  # with global ARGs substituted
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.instructions if i == instruction]

    def last(self, instruction: str) -> str | None:
        found = self.values(instruction)
        return found[-1] if found else None

    def exec_form(self, instruction: str) -> list[str]:
        value = self.last(instruction)
        assert value is not None, f"{self.name}: no {instruction}"
        argv = json.loads(value)
        assert isinstance(argv, list), f"{self.name}: {instruction} is not in exec form"
        return argv

    def healthcheck_cmd(self) -> list[str]:
        value = self.last("HEALTHCHECK")
        assert value, f"{self.name}: no HEALTHCHECK"
        options, _, command = value.partition("CMD")
        argv = json.loads(command.strip())
        assert isinstance(argv, list), "HEALTHCHECK CMD should be in exec form (no shell needed)"
        return argv

    def healthcheck_options(self) -> dict[str, str]:
        options = self.last("HEALTHCHECK").partition("CMD")[0]
        return dict(re.findall(r"--([a-z-]+)=(\S+)", options))


@lru_cache(maxsize=None)
def parse(path: Path = DOCKERFILE) -> tuple[dict[str, str], dict[str, Stage], list[str]]:
    """(global ARG defaults, stages by name, stage names in order)."""
    # fileobj: given a path, the parser takes any name but "Dockerfile" for
    # a directory.
    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()), cache_content=True)
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    order: list[str] = []
    current: Stage | None = None

    def substitute(text: str) -> str:
        return re.sub(
            r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text
        )

    for item in parser.structure:
        instruction, value = item["instruction"], item["value"].strip()
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", value, re.I)
            assert m, f"cannot parse FROM {value}"
            name = m.group(2) or str(len(order))
            current = Stage(name=name, base=substitute(m.group(1)))
            stages[name] = current
            order.append(name)
        elif current is None:
            assert instruction == "ARG", f"{instruction} before the first FROM"
            key, _, default = value.partition("=")
            args[key] = default
        else:
            current.instructions.append((instruction, value))
    return args, stages, order


def final_stages() -> list[Stage]:
    return [parse(path)[1][name] for name, path in FINAL.items()]


def copy_from(stage: Stage) -> list[tuple[str, list[str], str]]:
    """(source stage or "" for the context, sources, destination) per COPY."""
    out = []
    for value in stage.values("COPY"):
        words = shlex.split(value)
        source = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), "")
        paths = [w for w in words if not w.startswith("--")]
        out.append((source, paths[:-1], paths[-1]))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint not installed (requirements-dev.txt installs it on x86_64 Linux)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", FINAL)
def test_multi_stage_with_the_server_image_as_default_target(name):
    _, stages, order = parse(FINAL[name])
    assert len(order) >= 3
    assert order[-1] == name, f"the default target (last stage) of {FINAL[name].name} should be {name}"
    for stage_name, stage in stages.items():
        assert ":" in stage.base or "@" in stage.base or stage.base in stages, (
            f"{stage_name}: base {stage.base} is neither pinned by tag nor a stage"
        )
        assert not stage.base.endswith(":latest"), f"{stage_name}: {stage.base}"
    assert "example-models" in parse(DOCKERFILE)[1]


def needs(stages: dict[str, Stage], target: str) -> set[str]:
    """The stages `target` is built from (FROM and COPY --from), itself included."""
    seen, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name in seen or name not in stages:
            continue
        seen.add(name)
        todo.append(stages[name].base)
        todo.extend(source for source, _, _ in copy_from(stages[name]) if source)
    return seen


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_classic_builder_builds_nothing_a_target_does_not_need(path):
    """Docker's classic builder (no BuildKit, as in Debian's docker.io) builds
    every stage before the target, in file order, needed or not: such a
    stage must not run anything (no second compile, no CUDA base for a CPU
    build). So example-models comes first, and GPU stages live in their own
    file."""
    _, stages, order = parse(path)
    # The targets people build: stages no other stage is built from.
    used = {n for t in order for n in needs(stages, t) if n != t}
    targets = [t for t in order if t not in used]
    assert targets[-1] == order[-1]
    for target in targets:
        position = order.index(target)
        needed = needs(stages, target)
        for name in order[:position]:
            if name not in needed:
                assert not stages[name].values("RUN"), (
                    f"{path.name}: building {target} also builds {name}, which runs commands"
                )
                assert stages[name].base.split(":")[0] in ("busybox", "scratch"), (
                    f"{path.name}: building {target} also pulls {stages[name].base} for {name}"
                )
    assert not any(s.base.startswith("nvidia/") for s in parse(DOCKERFILE)[1].values())


def test_the_gpu_file_mirrors_the_cpu_build():
    """What the two files share stays the same: build arguments, the build
    stages and the server image's user, ports, entrypoint and HEALTHCHECK."""
    cpu_args, cpu, _ = parse(DOCKERFILE)
    gpu_args, gpu, _ = parse(GPU_DOCKERFILE)
    for arg in ("RUST_VERSION", "ORT_VERSION", "CARGO_CHEF_VERSION", "PYTHON_IMAGE"):
        assert cpu_args[arg] == gpu_args[arg], arg
    for name in ("chef", "planner"):
        assert cpu[name].base == gpu[name].base
        assert cpu[name].instructions == gpu[name].instructions, name
    for instruction in ("USER", "WORKDIR", "EXPOSE", "ENTRYPOINT", "CMD"):
        assert cpu["cpu"].last(instruction) == gpu["gpu"].last(instruction), instruction
    assert cpu["cpu"].healthcheck_cmd() == gpu["gpu"].healthcheck_cmd()


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_builder_uses_the_pinned_toolchain(path):
    args, stages, _ = parse(path)
    bases = {s.base for s in stages.values() if s.base.startswith("rust:")}
    assert bases == {f"rust:{args['RUST_VERSION']}-bookworm"}
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    required = workspace["workspace"]["package"]["rust-version"]
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(args["RUST_VERSION"]) >= as_tuple(required)[:2], (
        f"RUST_VERSION {args['RUST_VERSION']} < rust-version {required}"
    )


def lineage(stage: Stage) -> list[tuple[str, str]]:
    """The instructions that make `stage`: those of the stages it is built
    FROM (in the same file), then its own."""
    for path in DOCKERFILES:
        stages = parse(path)[1]
        if stages.get(stage.name) is stage:
            chain = [stage]
            while chain[0].base in stages:
                chain.insert(0, stages[chain[0].base])
            return [step for s in chain for step in s.instructions]
    raise AssertionError(f"{stage.name} is in no Dockerfile")


def builder_stages() -> list[Stage]:
    return [
        s
        for path in DOCKERFILES
        for s in parse(path)[1].values()
        if any("cargo build" in v for v in s.values("RUN"))
    ]


def test_dependencies_build_in_their_own_layer():
    """In every stage that builds oxserve, the dependencies are compiled
    (cargo chef cook) before the full source is copied, with the same
    profile, binary and features as the final build."""
    builders = builder_stages()
    assert builders
    for stage in builders:
        steps = lineage(stage)
        cook = next(
            (i for i, (ins, v) in enumerate(steps) if ins == "RUN" and "cargo chef cook" in v), None
        )
        assert cook is not None, f"{stage.name}: no dependency layer (cargo chef cook)"
        for ins, value in steps[:cook]:
            if ins == "COPY":
                assert "--from=" in value, f"{stage.name}: source copied before the dependency layer"
        full_copy = [
            i for i, (ins, v) in enumerate(steps) if ins == "COPY" and shlex.split(v)[:2] == [".", "."]
        ]
        build = next(i for i, (ins, v) in enumerate(steps) if ins == "RUN" and "cargo build" in v)
        assert full_copy and cook < full_copy[0] < build
        cook_cmd, build_cmd = steps[cook][1], steps[build][1]
        for flag in ("--release", "--bin oxserve"):
            assert flag in cook_cmd and flag in build_cmd, f"{stage.name}: {flag}"
        features = lambda cmd: re.findall(r"--features\s+(\S+)", cmd)  # noqa: E731
        assert features(cook_cmd) == features(build_cmd), f"{stage.name}: features differ"
        assert "--locked" in build_cmd


@lru_cache(maxsize=None)
def cargo_metadata() -> dict:
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo not on PATH")
    proc = subprocess.run(
        [cargo, "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_gpu_variant():
    args, stages, _ = parse(GPU_DOCKERFILE)
    gpu = stages["gpu"]
    assert re.fullmatch(r"nvidia/cuda:13\.[\d.]+-cudnn-runtime-ubuntu[\d.]+", gpu.base), gpu.base
    sources = {s for s, _, _ in copy_from(gpu) if s}
    ort = [stages[s] for s in sources if s.startswith("ort")]
    assert len(ort) == 1 and any(
        '"onnxruntime-gpu==${ORT_VERSION}"' in v for v in ort[0].values("RUN")
    ), "the GPU image needs ONNX Runtime from the onnxruntime-gpu wheel"
    builders = [stages[s] for s in sources if s.startswith("builder")]
    assert len(builders) == 1
    build = next(v for v in builders[0].values("RUN") if "cargo build" in v)
    wanted = re.findall(r"--features\s+(\S+)", build)
    assert wanted, "the GPU binary needs the server's GPU feature"
    package = next(p for p in cargo_metadata()["packages"] if p["name"] == "oxserve")
    for feature in wanted:
        assert feature in package["features"], (
            f"--features {feature}: the oxserve package has no such feature ({sorted(package['features'])})"
        )


def test_onnxruntime_pinned_like_requirements():
    args, stages, _ = parse()
    pins = re.findall(r"^onnxruntime==([\d.]+)\s*$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pins == [args["ORT_VERSION"]], f"requirements.txt {pins} vs ORT_VERSION {args['ORT_VERSION']}"
    assert parse(GPU_DOCKERFILE)[0]["ORT_VERSION"] == args["ORT_VERSION"]
    cpu_ort = [s for s, _, _ in copy_from(stages["cpu"]) if s.startswith("ort")]
    assert len(cpu_ort) == 1
    run = " ".join(stages[cpu_ort[0]].values("RUN"))
    assert '"onnxruntime==${ORT_VERSION}"' in run
    for stage in (stages[cpu_ort[0]], parse(GPU_DOCKERFILE)[1]["ort-gpu"]):
        run = " ".join(stage.values("RUN"))
        assert "--only-binary=:all:" in run and "--no-deps" in run
        assert 'libonnxruntime.so."${ORT_VERSION}"' in run
        # The server looks for the unversioned name.
        assert re.search(r"ln -s \S+ /out/lib/libonnxruntime\.so\b", run), stage.name


@pytest.mark.parametrize("name", FINAL)
def test_server_image(name):
    _, stages, _ = parse(FINAL[name])
    stage = stages[name]
    cli = serve_cli()

    # Non-root, by number (runAsNonRoot can only verify a numeric USER), and
    # the same IDs as the pod's securityContext.
    user = stage.last("USER")
    assert user and re.fullmatch(r"\d+(:\d+)?", user), f"USER {user!r} is not numeric"
    uid, _, gid = user.partition(":")
    assert int(uid) != 0
    pod_sc = pod_spec(render("cpu"))["securityContext"]
    assert int(uid) == pod_sc["runAsUser"]
    if gid:
        assert int(gid) == pod_sc["runAsGroup"]

    # Ports: gRPC (the server's default grpc_address) and metrics.
    exposed = {p.split("/")[0] for v in stage.values("EXPOSE") for p in v.split()}
    grpc_default = port_of(cli.keys["grpc_address"].default)
    assert {str(grpc_default), "8002"} <= exposed, exposed

    # The entrypoint is the server binary copied from a builder stage; the
    # ONNX Runtime library sits in lib/ beside it, where the server looks.
    entrypoint = stage.exec_form("ENTRYPOINT")
    assert stage.exec_form("CMD") == ["serve"]
    copies = copy_from(stage)
    binary = [d for s, _, d in copies if s.startswith("builder")]
    assert binary == [entrypoint[0]], f"{entrypoint} is not the built binary {binary}"
    lib_dir = str(Path(entrypoint[0]).parent / "lib")
    assert [d.rstrip("/") for s, _, d in copies if s.startswith("ort")] == [lib_dir]
    assert {s for s, _, _ in copies} <= {
        s for s in stages if s.startswith(("builder", "ort"))
    }, "final image copies from something other than the binary and the runtime"

    # HEALTHCHECK runs `oxserve health` within its timeout, on the address
    # the server takes from its own settings (no --addr: a port moved with
    # OXSERVE_GRPC_ADDRESS or OXSERVE_CONFIG is followed).
    argv = stage.healthcheck_cmd()
    assert argv[:2] == [entrypoint[0], "health"], argv
    assert "--addr" not in argv, f"HEALTHCHECK pins an address: {argv}"
    assert argv[argv.index("--service") + 1] == "inference.GRPCInferenceService"
    options = stage.healthcheck_options()
    inner = argv[argv.index("--timeout") + 1]
    assert int(inner.rstrip("s")) < int(options["timeout"].rstrip("s"))

    # No build tools: a runtime base, and nothing compiled or installed here.
    assert not BUILD_IMAGES.search(stage.base), stage.base
    for run in stage.values("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tool in the final image: {run}"
        assert "apt-get install" not in run

    # The model repository: created at the server's default location.
    default_repo = cli.keys["model_repository"].default
    assert any(default_repo in run for run in stage.values("RUN") if "mkdir" in run)


def test_init_container_copies_the_models_image():
    """k8s' init container copies from where the example-models target puts
    the models, into the volume the server reads."""
    _, stages, _ = parse()
    models = stages["example-models"]
    [(source, _, dest)] = copy_from(models)
    assert source == "" and dest.rstrip("/") == "/models"
    assert models.last("USER") == "10001:10001"
    objects = render("cpu")
    init = pod_spec(objects)["initContainers"][0]
    assert init["image"].startswith("oxserve-example-models:")
    command = init["command"]
    assert command[:2] == ["cp", "-R"] and command[2].startswith("/models/")
    target = command[-1].rstrip("/")
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in init["volumeMounts"]}
    assert mounts.get(target) == "models"
    server_mounts = {m["name"]: m for m in server_container(objects)["volumeMounts"]}
    assert server_mounts["models"]["mountPath"] == "/models"


# --- .dockerignore ----------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, str]]:
    """(is_exception, pattern) in file order, as Docker reads them."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        patterns.append((negate, pattern.strip("/").removeprefix("./")))
    return patterns


def _match(pattern: str, path: str) -> bool:
    """Docker's matching: the pattern matches the path or one of its parent
    directories; `**` spans directories, `*` does not."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1].replace("[!", "[^"), end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[: n + 1])) for n in range(len(parts)))


def ignored(path: str) -> bool:
    result = False
    for negate, pattern in ignore_patterns():
        if _match(pattern, path):
            result = not negate
    return result


def test_dockerignore_keeps_build_inputs_and_drops_the_rest():
    for heavy in ("target/debug/oxserve", ".venv/bin/python", ".git/HEAD", ".oxserve/onnxruntime"):
        assert ignored(heavy), f"{heavy} would be sent to the Docker daemon"
    needed = {"Cargo.toml", "Cargo.lock"}
    meta = cargo_metadata()
    for package in meta["packages"]:
        needed.add(str(Path(package["manifest_path"]).relative_to(ROOT)))
        for target in package["targets"]:
            needed.add(str(Path(target["src_path"]).relative_to(ROOT)))
    needed |= {str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*") if p.is_file()}
    stages = [s for path in DOCKERFILES for s in parse(path)[1].values()]
    for stage in stages:
        for source, paths, _ in copy_from(stage):
            if source == "" and paths != ["."]:
                for p in paths:
                    needed |= {
                        str(f.relative_to(ROOT)) for f in (ROOT / p).rglob("*") if f.is_file()
                    } or {p}
    dropped = sorted(p for p in needed if ignored(p))
    assert not dropped, f".dockerignore drops build inputs: {dropped}"


def test_dockerignore_matcher():
    assert _match("target", "target/debug/x")
    assert _match("**/*.pyc", "a/b/c.pyc") and _match("**/*.pyc", "c.pyc")
    assert not _match("tests/models", "tests/infer.rs")
    assert not _match("*.md", "docs/deploy.md")
