#!/usr/bin/env python3
"""Offline renderer and checker of the kustomizations in deploy/kubernetes/.

    render.py build OVERLAY_DIR              print the rendered documents (multi-document YAML)
    render.py check --out DIR --receiver-bin BIN
                                             render every overlays/* into DIR/<overlay>.yaml and
                                             check them (see below); exit 1 on any problem

`make k8s-validate` runs `check`, then `kubernetes-validate --strict` over DIR/*.yaml.

The renderer implements the few kustomize features these kustomizations use, and refuses any
other: `resources` (files and kustomization directories), `namespace`, `patches` given as
strategic-merge files (`path:` or inline `patch:`, no `target:`), and `configMapGenerator` with
`files`/`literals` and `disableNameSuffixHash: true`. On those, `kubectl kustomize OVERLAY_DIR`
(kustomize v5) gives the same documents (in another order); `check` compares the two when a
`kubectl` with kustomize v5 or later is on PATH.

`check` also verifies, for each overlay:
- every environment variable the cwm-receiver container gets (`env` and the keys of the
  ConfigMaps and Secrets of its `envFrom`) is one that `cwm-receiver --help` lists, or a
  `{$VAR}` that the rendered configuration files substitute;
- the container runs as uid 10001 with a read-only root filesystem, no privilege escalation, no
  capabilities and the RuntimeDefault seccomp profile, and has readiness and liveness probes on
  /health and resources;
- WEBHOOKS_CONFIG_FILE / CONNECTIONS_CONFIG_FILE (file backend) name a key of a ConfigMap mounted
  at their directory, without subPath (a subPath mount never sees updates);
- ETCD_ENDPOINTS (etcd backend) names exactly the members of a StatefulSet behind a headless
  Service of the same overlay.

Needs PyYAML only (installed with kubernetes-validate into the test virtualenv).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "patches",
    "configMapGenerator",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
# Strategic-merge keys of the lists the patches touch (as in the Kubernetes API's
# x-kubernetes-patch-merge-key); any other list is replaced by the patch's.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}
RECEIVER_CONTAINER = "cwm-receiver"
RECEIVER_UID = 10001


class RenderError(Exception):
    """A kustomization this renderer cannot (or refuses to) render."""


# --------------------------------------------------------------------------------------------
# Rendering


def find_kustomization(directory: Path) -> Path:
    for name in KUSTOMIZATION_NAMES:
        path = directory / name
        if path.is_file():
            return path
    raise RenderError(f"{directory}: no kustomization.yaml")


def load_documents(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "metadata" not in d:
            raise RenderError(f"{path}: not a Kubernetes object: {str(d)[:80]}")
    return docs


def resource_id(doc: dict) -> tuple[str, str, str]:
    group = doc.get("apiVersion", "").rpartition("/")[0]
    return (group, doc["kind"], doc["metadata"].get("name", ""))


def strategic_merge(target, patch, field: str = ""):
    """Merge `patch` into `target` (both plain YAML values) the way kubectl's strategic merge does
    for the fields used here: maps merge key by key (`null` deletes), lists of known merge keys
    merge element by element, other lists and scalars are replaced."""
    if isinstance(patch, dict) and isinstance(target, dict):
        if any(k.startswith("$") for k in patch):
            raise RenderError(f"strategic-merge directive in {field or 'patch'}: unsupported")
        out = dict(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(patch, list) and isinstance(target, list):
        merge_key = MERGE_KEYS.get(field)
        if merge_key is None:
            return copy.deepcopy(patch)
        # Elements the target lacks come first, in the patch's order, as kustomize puts them.
        out = [copy.deepcopy(item) for item in target]
        added = []
        for item in patch:
            if not isinstance(item, dict) or merge_key not in item:
                raise RenderError(f"{field}: patch element without `{merge_key}`")
            for i, existing in enumerate(out):
                if isinstance(existing, dict) and existing.get(merge_key) == item[merge_key]:
                    out[i] = strategic_merge(existing, item, field)
                    break
            else:
                added.append(copy.deepcopy(item))
        return added + out
    return copy.deepcopy(patch)


def generate_config_map(base: Path, spec: dict) -> dict:
    unknown = set(spec) - {"name", "files", "literals", "options", "behavior"}
    if unknown:
        raise RenderError(f"configMapGenerator {spec.get('name')}: unsupported {sorted(unknown)}")
    if spec.get("behavior", "create") != "create":
        raise RenderError(f"configMapGenerator {spec['name']}: only behavior create is supported")
    options = spec.get("options") or {}
    if options.get("disableNameSuffixHash") is not True:
        raise RenderError(
            f"configMapGenerator {spec['name']}: set options.disableNameSuffixHash: true "
            "(the name hash is not implemented here)"
        )
    unknown = set(options) - {"disableNameSuffixHash", "labels", "annotations"}
    if unknown:
        raise RenderError(f"configMapGenerator {spec['name']}: unsupported options {sorted(unknown)}")
    data: dict[str, str] = {}
    for literal in spec.get("literals") or []:
        key, sep, value = literal.partition("=")
        if not sep:
            raise RenderError(f"configMapGenerator {spec['name']}: literal without `=`: {literal}")
        data[key] = value
    for entry in spec.get("files") or []:
        key, sep, rel = entry.partition("=")
        if not sep:
            key, rel = Path(entry).name, entry
        data[key] = (base / rel).read_text(encoding="utf-8")
    metadata: dict = {"name": spec["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    if options.get("annotations"):
        metadata["annotations"] = dict(options["annotations"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def render(directory: Path) -> list[dict]:
    """Render the kustomization in `directory` (recursively) into a list of objects."""
    directory = directory.resolve()
    kustomization = yaml.safe_load(find_kustomization(directory).read_text(encoding="utf-8")) or {}
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")

    docs: list[dict] = []
    for entry in kustomization.get("resources") or []:
        path = directory / entry
        if path.is_dir():
            docs.extend(render(path))
        else:
            docs.extend(load_documents(path))
    for spec in kustomization.get("configMapGenerator") or []:
        docs.append(generate_config_map(directory, spec))

    seen: set = set()
    for d in docs:
        rid = resource_id(d)
        if rid in seen:
            raise RenderError(f"{directory}: {rid} defined twice")
        seen.add(rid)

    for entry in kustomization.get("patches") or []:
        if "target" in entry or "options" in entry:
            raise RenderError(f"{directory}: patches with target/options are unsupported")
        if "path" in entry:
            patch_docs = load_documents(directory / entry["path"])
        elif "patch" in entry:
            patch_docs = [d for d in yaml.safe_load_all(entry["patch"]) if d is not None]
        else:
            raise RenderError(f"{directory}: a patch needs `path` or `patch`")
        for patch in patch_docs:
            rid = resource_id(patch)
            for i, d in enumerate(docs):
                if resource_id(d) == rid:
                    docs[i] = strategic_merge(d, patch)
                    break
            else:
                raise RenderError(f"{directory}: patch target {rid} not found")

    namespace = kustomization.get("namespace")
    if namespace:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = namespace
    return docs


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump(docs: list[dict]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=1000)


# --------------------------------------------------------------------------------------------
# Checks


def receiver_env_names(bin_path: str) -> set[str]:
    out = subprocess.run([bin_path, "--help"], check=True, capture_output=True, text=True).stdout
    names = set(re.findall(r"\[env: ([A-Z0-9_]+)", out))
    if not names:
        raise RenderError(f"`{bin_path} --help` lists no [env: ...] variables")
    return names


def find(docs: list[dict], kind: str, name: str) -> dict | None:
    for d in docs:
        if d["kind"] == kind and d["metadata"].get("name") == name:
            return d
    return None


def workloads(docs: list[dict]):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield d, d["spec"]["template"]["spec"]


def effective_env(docs: list[dict], container: dict, errors: list[str], where: str) -> dict:
    """The variables a container gets: envFrom ConfigMap/Secret keys, then env (which wins)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref not in source:
                continue
            obj = find(docs, kind, source[ref]["name"])
            if obj is None:
                errors.append(f"{where}: envFrom {kind} {source[ref]['name']} is not in the overlay")
                continue
            for key in ("data", "stringData"):
                for k, v in (obj.get(key) or {}).items():
                    env[prefix + k] = v if kind == "ConfigMap" or key == "stringData" else None
    for var in container.get("env") or []:
        env[var["name"]] = var.get("value")
    return env


def substituted_variables(docs: list[dict]) -> set[str]:
    """`{$VAR}` / `{$VAR:default}` names used by the configuration files of the overlay."""
    names: set[str] = set()
    for d in docs:
        if d["kind"] == "ConfigMap":
            for value in (d.get("data") or {}).values():
                names.update(re.findall(r"\{\$([A-Za-z_][A-Za-z0-9_]*)", str(value)))
    return names


def check_overlay(name: str, docs: list[dict], known: set[str]) -> list[str]:
    errors: list[str] = []
    receivers = [
        (w, spec, c)
        for w, spec in workloads(docs)
        for c in spec.get("containers", [])
        if c.get("name") == RECEIVER_CONTAINER
    ]
    if not receivers:
        return [f"{name}: no {RECEIVER_CONTAINER} container"]
    allowed = known | substituted_variables(docs)
    for workload, spec, c in receivers:
        where = f"{name}: {workload['kind']}/{workload['metadata']['name']}"
        env = effective_env(docs, c, errors, where)
        for var in sorted(set(env) - allowed):
            errors.append(f"{where}: {var} is not a variable of cwm-receiver --help")

        pod_sc = spec.get("securityContext") or {}
        sc = {**pod_sc, **(c.get("securityContext") or {})}
        expect = {
            "runAsNonRoot": True,
            "runAsUser": RECEIVER_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
        }
        for key, want in expect.items():
            if sc.get(key) != want:
                errors.append(f"{where}: securityContext.{key} is {sc.get(key)!r}, want {want!r}")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            errors.append(f"{where}: capabilities do not drop ALL")
        if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            errors.append(f"{where}: seccompProfile is not RuntimeDefault")
        for probe in ("readinessProbe", "livenessProbe"):
            if (c.get(probe) or {}).get("httpGet", {}).get("path") != "/health":
                errors.append(f"{where}: {probe} is not an HTTP GET of /health")
        resources = c.get("resources") or {}
        if not resources.get("requests") or not (resources.get("limits") or {}).get("memory"):
            errors.append(f"{where}: resources need requests and a memory limit")

        mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        backend = env.get("CONFIG_BACKEND", "file")
        if backend == "file":
            for var, default in (
                ("WEBHOOKS_CONFIG_FILE", "webhooks.json"),
                ("CONNECTIONS_CONFIG_FILE", "connections.json"),
            ):
                path = env.get(var) or default
                directory, base = os.path.split(path)
                mount = mounts.get(directory)
                volume = volumes.get(mount["name"]) if mount else None
                cm = (volume or {}).get("configMap")
                if not cm:
                    errors.append(f"{where}: {var}={path}: no ConfigMap mounted at {directory!r}")
                    continue
                if mount.get("subPath") or not mount.get("readOnly"):
                    errors.append(f"{where}: {directory} must be mounted readOnly without subPath")
                obj = find(docs, "ConfigMap", cm["name"])
                if obj is None or base not in (obj.get("data") or {}):
                    errors.append(f"{where}: {var}={path}: ConfigMap {cm['name']} has no {base}")
        elif backend == "etcd":
            errors.extend(check_etcd_endpoints(docs, env, where))
        else:
            errors.append(f"{where}: CONFIG_BACKEND={backend!r}")
    return errors


def check_etcd_endpoints(docs: list[dict], env: dict, where: str) -> list[str]:
    endpoints = [e.strip() for e in (env.get("ETCD_ENDPOINTS") or "").split(",") if e.strip()]
    if not endpoints:
        return [f"{where}: CONFIG_BACKEND=etcd without ETCD_ENDPOINTS"]
    members = set()
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        service = find(docs, "Service", sts["spec"].get("serviceName", ""))
        if service is None or service["spec"].get("clusterIP") != "None":
            continue
        ports = {p["port"] for p in service["spec"].get("ports", [])}
        for i in range(sts["spec"].get("replicas", 1)):
            for port in ports:
                members.add(f"{sts['metadata']['name']}-{i}.{service['metadata']['name']}:{port}")
    wanted = {m for m in members if m.endswith(":2379")}
    stripped = {re.sub(r"^https?://", "", e) for e in endpoints}
    errors = [f"{where}: ETCD_ENDPOINTS names {e}, not a member" for e in sorted(stripped - members)]
    errors += [f"{where}: ETCD_ENDPOINTS misses member {m}" for m in sorted(wanted - stripped)]
    return errors


def kubectl_kustomize() -> tuple[str | None, str]:
    """A `kubectl` whose kustomize is v5 or later, or None and why not."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None, "kubectl not on PATH"
    res = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True
    )
    try:
        version = json.loads(res.stdout).get("kustomizeVersion", "")
    except ValueError:
        version = ""
    match = re.match(r"v?(\d+)\.", version)
    if not match or int(match.group(1)) < 5:
        return None, f"kubectl's kustomize is {version or 'unknown'}, not v5 or later"
    return kubectl, version


def kubectl_documents(kubectl: str, overlay: Path) -> list[dict]:
    res = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay}: {res.stderr.strip()}")
    return [d for d in yaml.safe_load_all(res.stdout) if d is not None]


def by_id(docs: list[dict]) -> dict:
    return {resource_id(d) + (d["metadata"].get("namespace", ""),): d for d in docs}


def check(out_dir: Path, receiver_bin: str) -> int:
    root = Path(__file__).resolve().parent
    known = receiver_env_names(receiver_bin)
    kubectl, why = kubectl_kustomize()
    out_dir.mkdir(parents=True, exist_ok=True)
    overlays = sorted(p for p in (root / "overlays").iterdir() if p.is_dir())
    failed = 0
    for overlay in overlays:
        name = overlay.name
        docs = render(overlay)
        (out_dir / f"{name}.yaml").write_text(dump(docs), encoding="utf-8")
        kinds = ", ".join(sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
        print(f"rendered {name}: {len(docs)} objects ({kinds}) -> {out_dir / (name + '.yaml')}")
        errors = check_overlay(name, docs, known)
        if kubectl is None:
            print(f"  {why}: comparison with `kubectl kustomize` not run")
        else:
            theirs = kubectl_documents(kubectl, overlay)
            ours, theirs_by_id = by_id(docs), by_id(theirs)
            for rid in sorted(set(ours) | set(theirs_by_id)):
                if ours.get(rid) != theirs_by_id.get(rid):
                    errors.append(f"{name}: {rid} differs from `kubectl kustomize`")
            if not errors:
                print(f"  same objects as `kubectl kustomize {overlay.relative_to(root)}` ({why})")
        for e in errors:
            print(f"FAIL  {e}")
        if not errors:
            print(f"PASS  {name}: env names known to cwm-receiver, security context, probes, "
                  "config mounts / etcd endpoints")
        failed += bool(errors)
    print(f"{len(overlays) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="print the rendered documents of OVERLAY_DIR")
    b.add_argument("overlay", type=Path)
    c = sub.add_parser("check", help="render every overlay into --out and check them")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--receiver-bin", required=True)
    args = parser.parse_args()
    try:
        if args.cmd == "build":
            sys.stdout.write(dump(render(args.overlay)))
            return 0
        return check(args.out, args.receiver_bin)
    except (RenderError, OSError, yaml.YAMLError, subprocess.CalledProcessError) as e:
        print(f"render.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
