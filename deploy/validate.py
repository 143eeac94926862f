"""Offline validation of the rendered Kubernetes manifests (called by deploy/validate.sh).

  validate.py check K8S_DIR [--compare CMD]   render every kustomization and validate it
  validate.py self-test K8S_DIR               break copies of the manifests; each must fail

Rendering is done by deploy/render.py (a small kustomize subset, no kubectl needed). With
--compare "kubectl kustomize" (validate.sh passes it when kubectl is installed) every rendering is
also compared with that command's output: same objects by apiVersion/kind/name, equal once loaded.

Core kinds are checked with kubernetes-validate (the Kubernetes OpenAPI schemas, strict: unknown
fields are errors) against every version in KUBERNETES_VERSIONS. Custom resources are checked
with jsonschema against the openAPIV3Schema of the CRDs vendored in deploy/schemas/ (also strict,
the way the API server prunes/rejects unknown fields). CEL rules (x-kubernetes-validations) in
the CRDs are not evaluated.
"""

import copy
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

import render as renderer

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMAS = os.path.join(HERE, "schemas")
# Oldest and newest Kubernetes minor the manifests are meant for.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# Every kustomization a user may apply.
TARGETS = ["base", "overlays/cpu", "overlays/cuda", "examples/keda", "examples/inference-gateway"]


def strict(schema):
    """Closes every object schema that lists its properties (kubeconform's --strict does the same)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if schema.get("type") == "object" and "properties" in schema \
                and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def load_crd_schemas():
    """{(apiVersion, kind): JSON schema} from every CRD in deploy/schemas/."""
    out = {}
    for path in sorted(glob.glob(os.path.join(SCHEMAS, "*.yaml"))):
        with open(path) as f:
            crd = yaml.safe_load(f)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = strict(version["schema"]["openAPIV3Schema"])
            # apiVersion/kind must be exactly this resource's.
            schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema.setdefault("required", [])
            schema["required"] = sorted(set(schema["required"]) | {"apiVersion", "kind", "metadata", "spec"})
            out[(f"{group}/{version['name']}", kind)] = schema
        out.setdefault(("group", group), set()).add(kind)
    return out


def render(directory):
    try:
        return renderer.render(directory)
    except renderer.RenderError as e:
        raise ValueError(f"render failed (deploy/render.py): {e}") from e


def first_difference(a, b, path=""):
    """The first path where two loaded YAML values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key}: only in {'kubectl' if key in b else 'render.py'}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} entries from render.py, {len(b)} from kubectl"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: render.py {a!r} != kubectl {b!r}"


def compare(command, directory, docs):
    """Differences between render.py's docs and `command directory` (e.g. kubectl kustomize)."""
    cmd = command + [directory]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        return [f"{' '.join(cmd)} failed: {result.stderr.strip()}"]
    key = lambda d: (d.get("apiVersion"), d.get("kind"), (d.get("metadata") or {}).get("name"))
    ours = {key(d): d for d in docs}
    theirs = {key(d): d for d in yaml.safe_load_all(result.stdout) if d}
    problems = [f"{'/'.join(map(str, k))}: only in {'kubectl' if k in theirs else 'render.py'} output"
                for k in sorted(set(ours) ^ set(theirs), key=str)]
    for k in sorted(set(ours) & set(theirs), key=str):
        difference = first_difference(ours[k], theirs[k])
        if difference:
            problems.append(f"{'/'.join(map(str, k))}: {difference}")
    return [f"render.py differs from {' '.join(command)}: {p}" for p in problems]


def check_document(doc, crds):
    """Error messages for one resource (empty when it is valid)."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    name = f"{kind}/{doc.get('metadata', {}).get('name')} ({api_version})"
    group = api_version.split("/")[0] if isinstance(api_version, str) and "/" in api_version else None
    if ("group", group) in crds:
        schema = crds.get((api_version, kind))
        if schema is None:
            return [f"{name}: no vendored schema for this apiVersion/kind in deploy/schemas/"]
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        return [f"{name}: {'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(map(str, e.path)) or "<root>"
            problems.append(f"{name}: k8s {version}: {path}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            problems.append(f"{name}: k8s {version}: {type(e).__name__}: no schema for this "
                            f"apiVersion/kind {e}".rstrip())
    return problems


def check_tree(k8s_dir, crds, quiet=False, targets=TARGETS, compare_with=None):
    """All problems in the given targets under k8s_dir."""
    problems = []
    for target in targets:
        try:
            docs = render(os.path.join(k8s_dir, target))
        except ValueError as e:
            problems.append(f"{target}: {e}")
            continue
        target_problems = []
        if compare_with:
            target_problems += [f"{target}: {p}" for p in compare(compare_with, os.path.join(k8s_dir, target), docs)]
        for doc in docs:
            target_problems += [f"{target}: {p}" for p in check_document(doc, crds)]
        if not quiet:
            kinds = ", ".join(sorted({d["kind"] for d in docs}))
            same = f", same as {' '.join(compare_with)}" if compare_with and not target_problems else ""
            print(f"  {target}: {len(docs)} resources ({kinds}): "
                  f"{'OK' + same if not target_problems else f'{len(target_problems)} problem(s)'}")
        problems += target_problems
    return problems


# (description, file under deploy/k8s, text to replace, replacement[, text the first problem must
# contain]). Each must make validation fail.
BREAKAGES = [
    ("wrong field type: Deployment replicas is a string",
     "base/deployment.yaml", "  replicas: 2\n", "  replicas: two\n"),
    ("wrong field type: startupProbe periodSeconds is a list",
     "base/deployment.yaml", "            periodSeconds: 5\n", "            periodSeconds: [5]\n"),
    ("unknown field: typo in a container field",
     "base/deployment.yaml", "          imagePullPolicy: IfNotPresent\n          args:\n            - serve",
     "          imagePullPolicy: IfNotPresent\n          arg:\n            - serve"),
    ("missing required field: Service port",
     "base/service.yaml", "      port: 80\n", ""),
    ("missing required field: HPA scaleTargetRef.name",
     "base/hpa.yaml", "    name: inferno\n  minReplicas", "  minReplicas"),
    ("bad apiVersion: autoscaling/v3 HorizontalPodAutoscaler",
     "base/hpa.yaml", "apiVersion: autoscaling/v2", "apiVersion: autoscaling/v3"),
    ("bad apiVersion: apps/v1beta2 Deployment (removed in 1.16)",
     "base/deployment.yaml", "apiVersion: apps/v1", "apiVersion: apps/v1beta2"),
    ("CRD wrong field type: ScaledObject minReplicaCount is a string",
     "components/keda/scaledobject.yaml", "  minReplicaCount: 2\n", "  minReplicaCount: \"2\"\n"),
    ("CRD unknown field: ScaledObject spec.maxReplicas",
     "components/keda/scaledobject.yaml", "  maxReplicaCount: 10\n", "  maxReplicas: 10\n"),
    ("CRD missing required field: InferencePool targetPorts",
     "components/inference-pool/inferencepool.yaml", "  targetPorts:\n    - number: 8080\n", ""),
    ("CRD wrong field type: InferencePool port number is a string",
     "components/inference-pool/inferencepool.yaml", "    - number: 8080\n", "    - number: \"8080\"\n"),
    ("CRD bad apiVersion: InferencePool inference.networking.k8s.io/v2",
     "components/inference-pool/inferencepool.yaml",
     "apiVersion: inference.networking.k8s.io/v1", "apiVersion: inference.networking.k8s.io/v2"),
    ("renderer: a kustomization field render.py does not implement (namePrefix) is refused",
     "overlays/cpu/kustomization.yaml", "resources:\n  - ../../base\n",
     "namePrefix: staging-\nresources:\n  - ../../base\n", "unsupported kustomization field(s) namePrefix"),
]


def self_test(k8s_dir, crds):
    failures = 0
    with tempfile.TemporaryDirectory(prefix="inferno-validate-") as tmp:
        pristine = os.path.join(tmp, "pristine")
        shutil.copytree(k8s_dir, pristine)
        control = check_tree(pristine, crds, quiet=True)
        if control:
            print("FAIL control: the unmodified copy does not validate:\n  " + "\n  ".join(control))
            return 1
        print("ok   control: the unmodified copy validates")
        for i, (what, rel, old, new, *must_mention) in enumerate(BREAKAGES):
            tree = os.path.join(tmp, f"broken{i}")
            shutil.copytree(k8s_dir, tree)
            path = os.path.join(tree, rel)
            with open(path) as f:
                text = f.read()
            if text.count(old) != 1:
                print(f"FAIL {what}: the text to break occurs {text.count(old)} times in {rel} (update BREAKAGES)")
                failures += 1
                continue
            with open(path, "w") as f:
                f.write(text.replace(old, new))
            # Render only the kustomization that includes the broken file.
            target = {"components/keda": "examples/keda",
                      "components/inference-pool": "examples/inference-gateway"}.get(os.path.dirname(rel), os.path.dirname(rel))
            problems = check_tree(tree, crds, quiet=True, targets=[target])
            if problems and must_mention and must_mention[0] not in problems[0]:
                print(f"FAIL {what}: rejected, but not with {must_mention[0]!r}: {problems[0][:300]}")
                failures += 1
            elif problems:
                print(f"ok   {what}: rejected ({problems[0][:240]})")
            else:
                print(f"FAIL {what}: validation accepted the broken manifest")
                failures += 1
    total = len(BREAKAGES) + 1
    print(f"self-test: {total - failures} passed, {failures} failed")
    return 1 if failures else 0


def main():
    args = sys.argv[1:]
    compare_with = None
    if "--compare" in args:
        i = args.index("--compare")
        compare_with = args[i + 1].split()
        del args[i:i + 2]
    if len(args) != 2 or args[0] not in ("check", "self-test"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    mode, k8s_dir = args
    crds = load_crd_schemas()
    if mode == "self-test":
        return self_test(k8s_dir, crds)
    problems = check_tree(k8s_dir, crds, compare_with=compare_with)
    for p in problems:
        print(f"  ERROR {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
