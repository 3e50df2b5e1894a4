#!/usr/bin/env bash
# Validates deploy/*.yml offline against the Kubernetes OpenAPI schemas, in
# strict mode (an unknown or misspelt field fails), for the oldest release
# the manifest targets and the newest the validator knows.
#
# kubernetes-validate (PyPI) carries the schemas, so no API server is
# needed (`kubectl --dry-run` needs one). It is installed, pinned, into a
# virtualenv under the target dir with Debian's python3 (ci/deps.sh lists
# python3 and its venv module).
set -euo pipefail
unset CDPATH
cd "$(dirname -- "$0")/.."

VALIDATOR_VERSION=1.37.0
KUBE_VERSIONS=(1.33.0 1.37.0)

target=${CARGO_TARGET_DIR:-target}
venv=$target/ci-tools/kubernetes-validate-$VALIDATOR_VERSION
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "ci/validate-manifests.sh: installing kubernetes-validate $VALIDATOR_VERSION into $venv" >&2
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATOR_VERSION"
fi

for v in "${KUBE_VERSIONS[@]}"; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" deploy/*.yml
  echo "ci/validate-manifests.sh: deploy/*.yml valid for Kubernetes $v (strict)" >&2
done
