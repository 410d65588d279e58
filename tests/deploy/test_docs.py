"""docs/deploy.md stays true to the files it walks through."""

import re

import yaml

from deploy import K8S, ROOT, pod_spec, render

DOC = ROOT / "docs" / "deploy.md"


def test_paths_in_the_guide_exist():
    text = DOC.read_text()
    paths = set(re.findall(r"`((?:k8s|scripts|tests|examples|docs)/[\w./-]*\w)`", text))
    paths |= set(re.findall(r"\s((?:k8s|scripts|tests|examples)/[\w./-]*\w)", text))
    assert paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/deploy.md names missing paths: {missing}"


def test_image_tags_in_the_guide_match_the_cpu_overlay():
    text = DOC.read_text()
    pod = pod_spec(render("cpu"))
    for container in pod["initContainers"] + pod["containers"]:
        assert f"-t {container['image']} " in text or f"-t {container['image']}\n" in text, (
            f"the guide does not build {container['image']}"
        )
        assert container["image"] in text.split("kind load docker-image", 1)[1].splitlines()[0]


def test_kind_port_mapping_matches_the_traefik_nodeport():
    cluster = yaml.safe_load((K8S / "kind" / "cluster.yaml").read_text())
    mappings = [m for n in cluster["nodes"] for m in n.get("extraPortMappings", [])]
    assert len(mappings) == 1
    text = DOC.read_text()
    assert f"ports.web.nodePort={mappings[0]['containerPort']}" in text
    assert f"localhost:{mappings[0]['hostPort']}" in text
    workers = [n for n in cluster["nodes"] if n["role"] == "worker"]
    replicas = render("cpu")
    deployment = next(o for o in replicas if o["kind"] == "Deployment")
    assert len(workers) >= deployment["spec"]["replicas"], "replicas cannot spread over the workers"
