"""A small kustomize renderer for deploy/k8s, so validation needs no kubectl/kustomize binary.

  python3 deploy/render.py DIR      print the rendered YAML stream of the kustomization in DIR

It implements only the kustomization features deploy/k8s uses, with kustomize's semantics:
  resources        files (multi-document YAML) and directories (nested kustomizations)
  components       directories holding a `kind: Component` (applied on top of what the
                   including kustomization has accumulated, like kustomize does)
  configMapGenerator  name + literals, behavior create/merge/replace; the name gets kustomize's
                   content hash suffix and every configMapRef / configMapKeyRef / configMap
                   volume pointing at it is renamed
  patches          `path:` or inline `patch:` strategic-merge patches without `target:`,
                   matched by apiVersion/kind/name; a top-level `$patch: delete` removes the
                   resource; lists are merged by their Kubernetes patch merge key
  labels           pairs + includeSelectors / includeTemplates (kustomize's field specs)
  images           name -> newName / newTag / digest
Anything else (another kustomization field, a patch target, a JSON6902 patch, a list field
whose merge semantics are not in MERGE_KEYS/ATOMIC_LISTS, ...) raises RenderError naming it,
so a new feature fails loudly instead of rendering wrongly. deploy/validate.sh compares the
output with `kubectl kustomize` wherever kubectl is installed.
"""

import copy
import hashlib
import json
import os
import sys

import yaml


class RenderError(Exception):
    pass


# Per kind: which top-level fields and which sub-fields of list entries are understood.
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "components", "patches", "images",
                        "labels", "configMapGenerator"}
ENTRY_FIELDS = {
    "patches": {"path", "patch"},
    "images": {"name", "newName", "newTag", "digest"},
    "labels": {"pairs", "includeSelectors", "includeTemplates"},
    "configMapGenerator": {"name", "literals", "behavior"},
}
API_VERSIONS = {"Kustomization": "kustomize.config.k8s.io/v1beta1",
                "Component": "kustomize.config.k8s.io/v1alpha1"}

# Strategic merge: list fields merged element-wise by this key (from the Kubernetes API types;
# `ports` is keyed by containerPort in a container, by port in a Service).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
              "env": "name", "volumes": "name", "volumeMounts": "mountPath",
              "volumeDevices": "devicePath", "imagePullSecrets": "name"}
# List fields a strategic-merge patch replaces as a whole.
ATOMIC_LISTS = {"args", "command", "envFrom", "tolerations", "accessModes", "drop", "add",
                "policies", "metrics", "triggers", "matchExpressions", "values", "targetPorts"}

# Label field specs (kustomize api/konfig/builtinpluginconsts), for the kinds we render.
# (kind, path, create); a path walks through lists implicitly, as kustomize's field specs do.
AFFINITY = "spec/template/spec/affinity/"
SELECTOR_LABEL_PATHS = [
    ("Service", "spec/selector", True),
    ("Deployment", "spec/selector/matchLabels", True),
    ("Deployment", AFFINITY + "podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels", False),
    ("Deployment", AFFINITY + "podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels", False),
    ("Deployment", AFFINITY + "podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels", False),
    ("Deployment", AFFINITY + "podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels", False),
    ("Deployment", "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels", False),
    ("PodDisruptionBudget", "spec/selector/matchLabels", False),
]
TEMPLATE_LABEL_PATHS = [("Deployment", "spec/template/metadata/labels", True)]
# Kinds kustomize has selector/template label field specs for that this file does not model.
UNMODELLED_LABEL_KINDS = {"StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
                          "ReplicationController", "NetworkPolicy"}

# kustomize's default ("legacy") output order.
ORDER_FIRST = ["Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition",
               "ServiceAccount", "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding",
               "ClusterRoleBinding", "ConfigMap", "Secret", "Endpoints", "Service", "LimitRange",
               "PriorityClass", "PersistentVolume", "PersistentVolumeClaim", "Deployment",
               "StatefulSet", "CronJob", "PodDisruptionBudget"]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


def rid(res):
    """Identity used for patch matching and duplicates, as kustomize's: apiVersion, kind, name."""
    return res.get("apiVersion"), res.get("kind"), (res.get("metadata") or {}).get("name")


def show(i):
    return f"{i[1]}/{i[2]} ({i[0]})"


def load_yaml_docs(path):
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        raise RenderError(f"{path}: {e}") from e


def check_fields(where, mapping, allowed, what):
    if not isinstance(mapping, dict):
        raise RenderError(f"{where}: {what} must be a mapping")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise RenderError(f"{where}: unsupported {what} field(s) {', '.join(unknown)} "
                          f"(deploy/render.py implements only: {', '.join(sorted(allowed))})")


# ---------------------------------------------------------------- strategic merge patch

def merge(orig, patch, path):
    """Strategic-merge `patch` into `orig` (both mappings); returns the result."""
    out = copy.deepcopy(orig)
    for key, value in patch.items():
        where = f"{path}.{key}"
        if isinstance(key, str) and key.startswith("$"):
            raise RenderError(f"{where}: unsupported strategic-merge directive {key}")
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, where)
        elif isinstance(value, list):
            out[key] = merge_list(key, out.get(key), value, where)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_list(key, orig, patch, where):
    merge_key = MERGE_KEYS.get(key)
    if key == "ports":
        merge_key = "containerPort" if ".containers." in where or ".initContainers." in where else "port"
    if merge_key is None:
        if key in ATOMIC_LISTS:
            return copy.deepcopy(patch)
        raise RenderError(f"{where}: list field {key!r} in a patch: its merge semantics are not "
                          "known to deploy/render.py (add it to MERGE_KEYS or ATOMIC_LISTS)")
    out = copy.deepcopy(orig) if isinstance(orig, list) else []
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise RenderError(f"{where}: every entry of a patched {key!r} list needs {merge_key!r}")
        if any(isinstance(k, str) and k.startswith("$") for k in item):
            raise RenderError(f"{where}: unsupported strategic-merge directive in a {key!r} entry")
        for i, existing in enumerate(out):
            if isinstance(existing, dict) and existing.get(merge_key) == item[merge_key]:
                out[i] = merge(existing, item, f"{where}.{item[merge_key]}")
                break
        else:
            out.append(copy.deepcopy(item))
    return out


def apply_patch(resources, patch, where):
    if not isinstance(patch, dict):
        raise RenderError(f"{where}: only strategic-merge patches (a YAML mapping) are supported, "
                          "not JSON6902 patches")
    target = rid(patch)
    matches = [i for i, r in enumerate(resources) if rid(r) == target]
    if not matches:
        raise RenderError(f"{where}: the patch matches no resource {show(target)}")
    index = matches[0]
    directive = patch.get("$patch")
    if directive == "delete":
        del resources[index]
    elif directive is not None:
        raise RenderError(f"{where}: unsupported top-level $patch: {directive}")
    else:
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
        resources[index] = merge(resources[index], body, show(target))


# ---------------------------------------------------------------- labels and images

def add_labels(obj, parts, pairs, create):
    """Sets pairs at the map found by walking `parts` (lists are walked through)."""
    if isinstance(obj, list):
        for item in obj:
            add_labels(item, parts, pairs, create)
        return
    if not isinstance(obj, dict):
        return
    head, rest = parts[0], parts[1:]
    if head not in obj or obj[head] is None:
        if not create:
            return
        obj[head] = {}
    if rest:
        add_labels(obj[head], rest, pairs, create)
    else:
        obj[head].update(pairs)


def apply_labels(resources, entry, where):
    pairs = {str(k): str(v) for k, v in (entry.get("pairs") or {}).items()}
    selectors = bool(entry.get("includeSelectors", False))
    templates = selectors or bool(entry.get("includeTemplates", False))
    specs = [(None, "metadata/labels", True)]
    specs += SELECTOR_LABEL_PATHS if selectors else []
    specs += TEMPLATE_LABEL_PATHS if templates else []
    for res in resources:
        if (selectors or templates) and res.get("kind") in UNMODELLED_LABEL_KINDS:
            raise RenderError(f"{where}: labels with includeSelectors/includeTemplates on "
                              f"kind {res['kind']} are not supported by deploy/render.py")
        for kind, path, create in specs:
            if kind in (None, res.get("kind")):
                add_labels(res, path.split("/"), pairs, create)


def split_image(image):
    name, digest = (image.split("@", 1) + [None])[:2]
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


def pod_specs(res):
    spec = res.get("spec") or {}
    for pod in (spec, (spec.get("template") or {}).get("spec"),
                (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")):
        if isinstance(pod, dict):
            yield pod


def apply_image(resources, entry, where):
    if "name" not in entry:
        raise RenderError(f"{where}: images entry without name")
    for res in resources:
        for pod in pod_specs(res):
            for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
                name, tag, digest = split_image(str(container.get("image", "")))
                if name != entry["name"]:
                    continue
                name = entry.get("newName", name)
                if "digest" in entry:
                    tag, digest = None, entry["digest"]
                elif "newTag" in entry:
                    tag, digest = str(entry["newTag"]), None
                container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


# ---------------------------------------------------------------- ConfigMap generator

def literal(item, where):
    if not isinstance(item, str) or "=" not in item:
        raise RenderError(f"{where}: configMapGenerator literal {item!r} is not KEY=VALUE")
    key, value = item.split("=", 1)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return key, value


def generate_configmap(resources, entry, where):
    name = entry.get("name")
    if not name:
        raise RenderError(f"{where}: configMapGenerator entry without name")
    data = dict(literal(item, where) for item in entry.get("literals") or [])
    behavior = entry.get("behavior", "create")
    found = [r for r in resources if rid(r) == ("v1", "ConfigMap", name)]
    if behavior == "create":
        if found:
            raise RenderError(f"{where}: ConfigMap {name} already exists (use behavior: merge)")
        resources.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                          "data": data, "__hash_suffix__": True})
    elif behavior in ("merge", "replace"):
        if not found:
            raise RenderError(f"{where}: behavior {behavior}: no ConfigMap {name} to {behavior}")
        found[0]["data"] = ({**(found[0].get("data") or {}), **data} if behavior == "merge" else data)
    else:
        raise RenderError(f"{where}: unsupported configMapGenerator behavior {behavior!r}")


def configmap_hash(cm):
    """kustomize's name suffix: sha256 of the Go-JSON-encoded {kind, name, data}, 10 chars.
    kustomize (api/hasher, v5.5) looks the name up as one field called "metadata/name", finds
    nothing and hashes "" instead, so the name never counts; kubectl's hashes match this."""
    encoded = json.dumps({"data": cm["data"] if "data" in cm else "", "kind": "ConfigMap", "name": ""},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                      ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        encoded = encoded.replace(char, esc)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def rename_configmap_refs(res, old, new):
    for pod in pod_specs(res):
        for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            for env_from in container.get("envFrom") or []:
                ref = env_from.get("configMapRef") or {}
                if ref.get("name") == old:
                    ref["name"] = new
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef") or {}
                if ref.get("name") == old:
                    ref["name"] = new
        for volume in pod.get("volumes") or []:
            sources = [volume] + ((volume.get("projected") or {}).get("sources") or [])
            for source in sources:
                ref = source.get("configMap") or {}
                if ref.get("name") == old:
                    ref["name"] = new


# ---------------------------------------------------------------- kustomizations

def accumulate(directory, expected_kind, resources):
    """Adds what the kustomization in `directory` produces to `resources` (in place)."""
    path = os.path.join(directory, "kustomization.yaml")
    if not os.path.isfile(path):
        others = [n for n in ("kustomization.yml", "Kustomization") if os.path.isfile(os.path.join(directory, n))]
        raise RenderError(f"{directory}: no kustomization.yaml"
                          + (f" ({others[0]} is not supported by deploy/render.py)" if others else ""))
    docs = load_yaml_docs(path)
    if len(docs) != 1:
        raise RenderError(f"{path}: expected one YAML document")
    k = docs[0]
    check_fields(path, k, KUSTOMIZATION_FIELDS, "kustomization")
    kind = k.get("kind", "Kustomization")
    if kind != expected_kind or k.get("apiVersion", API_VERSIONS[kind]) != API_VERSIONS[kind]:
        raise RenderError(f"{path}: expected {API_VERSIONS[expected_kind]} {expected_kind}, "
                          f"found {k.get('apiVersion')} {kind}")
    for field, allowed in ENTRY_FIELDS.items():
        for i, entry in enumerate(k.get(field) or []):
            check_fields(f"{path}: {field}[{i}]", entry, allowed, f"{field} entry")

    def add(res, where):
        if not isinstance(res, dict) or not res.get("kind") or not (res.get("metadata") or {}).get("name"):
            raise RenderError(f"{where}: a resource needs kind and metadata.name")
        if "namespace" in res["metadata"]:
            raise RenderError(f"{where}: metadata.namespace is not supported by deploy/render.py")
        if any(rid(r) == rid(res) for r in resources):
            raise RenderError(f"{where}: {show(rid(res))} is already defined")
        resources.append(res)

    # Order as in kustomize: resources, components, generators, transformers.
    for entry in k.get("resources") or []:
        target = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(target):
            for res in render_resources(target):
                add(res, f"{path}: resources {entry}")
        else:
            for res in load_yaml_docs(target):
                add(res, target)
    for entry in k.get("components") or []:
        accumulate(os.path.normpath(os.path.join(directory, entry)), "Component", resources)
    for i, entry in enumerate(k.get("configMapGenerator") or []):
        generate_configmap(resources, entry, f"{path}: configMapGenerator[{i}]")
    for i, entry in enumerate(k.get("patches") or []):
        where = f"{path}: patches[{i}]"
        if ("path" in entry) == ("patch" in entry):
            raise RenderError(f"{where}: give exactly one of path and patch")
        if "path" in entry:
            patch_docs = load_yaml_docs(os.path.join(directory, entry["path"]))
        else:
            try:
                patch_docs = [d for d in yaml.safe_load_all(entry["patch"]) if d is not None]
            except yaml.YAMLError as e:
                raise RenderError(f"{where}: {e}") from e
        for patch in patch_docs:
            apply_patch(resources, patch, where)
    for i, entry in enumerate(k.get("labels") or []):
        apply_labels(resources, entry, f"{path}: labels[{i}]")
    for i, entry in enumerate(k.get("images") or []):
        apply_image(resources, entry, f"{path}: images[{i}]")


def render_resources(directory):
    resources = []
    accumulate(directory, "Kustomization", resources)
    return resources


def order(res):
    kind = res["kind"]
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind)
    elif kind in ORDER_LAST:
        rank = len(ORDER_FIRST) + 1 + ORDER_LAST.index(kind)
    else:
        rank = len(ORDER_FIRST)
    return rank, res.get("apiVersion", ""), kind, res["metadata"]["name"]


def render(directory):
    """The rendered resources of the kustomization in `directory`, in kustomize's order."""
    resources = render_resources(directory)
    for cm in resources:
        if cm.pop("__hash_suffix__", False):
            old = cm["metadata"]["name"]
            cm["metadata"]["name"] = new = f"{old}-{configmap_hash(cm)}"
            for res in resources:
                rename_configmap_refs(res, old, new)
    return sorted(resources, key=order)


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        docs = render(sys.argv[1])
    except RenderError as e:
        print(f"deploy/render.py: {e}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False, default_flow_style=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
