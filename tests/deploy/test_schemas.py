"""Every core object of every rendering against the Kubernetes API's JSON
schemas (strict: unknown fields are errors, since the API server would drop
them silently), offline, with the schemas bundled in kubernetes-validate.

1.30 is the oldest version the manifests are written for: gRPC probes are GA
since 1.27, `appProtocol: kubernetes.io/h2c` is defined since 1.30, and the
preStop `sleep` action is on by default since 1.30. The newest bundled
version catches fields that were removed since."""

import kubernetes_validate
import pytest

from deploy import CORE_KINDS, CRD_KINDS, OPTIONAL_CRD_KINDS, RENDERINGS, render

VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("rendering", RENDERINGS)
def test_core_objects_validate(rendering, version):
    errors = []
    checked = set()
    for obj in render(rendering):
        if obj["kind"] in CRD_KINDS | OPTIONAL_CRD_KINDS:
            continue  # test_ingressroute.py, test_security.py
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{name}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{name}: {e.message}")
        checked.add(obj["kind"])
    assert not errors, "\n".join(errors)
    assert checked == CORE_KINDS
