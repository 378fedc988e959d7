"""A small kustomize in Python, for rendering deploy/kubernetes without the kustomize binary.

It does what deploy/kubernetes uses, as kustomize does it, and refuses anything else (so a new
feature in a kustomization is never silently skipped): `resources` (files and folders with a
kustomization.yaml), `namespace`, `images`, `configMapGenerator` and `secretGenerator` (`files`
and `literals`, with `disableNameSuffixHash: true` only: no name references to rewrite), and
`patches` (a strategic merge patch: maps merged, lists of named items merged by name, other lists
replaced; or a JSON 6902 patch, which needs a `target`; targets match kind, and name as a regular
expression).
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path

import jsonpatch
import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "configMapGenerator", "secretGenerator",
              "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
                  "StorageClass", "PriorityClass"}


class Unsupported(ValueError):
    pass


def build(folder: Path) -> list[dict]:
    """The objects `kustomize build folder` makes."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise Unsupported(f"{folder}: kustomization keys this renderer does not do: {sorted(unknown)}")
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        objects += build(path) if path.is_dir() else [o for o in yaml.safe_load_all(path.read_text()) if o]
    objects += [_generated(folder, g, "ConfigMap") for g in kustomization.get("configMapGenerator", [])]
    objects += [_generated(folder, g, "Secret") for g in kustomization.get("secretGenerator", [])]
    for patch in kustomization.get("patches", []):
        objects = _patched(folder, objects, patch)
    if "namespace" in kustomization:
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    return objects


def _generated(folder: Path, generator: dict, kind: str) -> dict:
    if not (generator.get("options") or {}).get("disableNameSuffixHash"):
        raise Unsupported(f"{generator['name']}: only generators with disableNameSuffixHash: true")
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, path = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (folder / path).read_text()
    for literal in generator.get("literals", []):
        key, value = literal.split("=", 1)
        data[key] = value
    if kind == "Secret":
        data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}, "data": data}
    if kind == "Secret":
        obj["type"] = "Opaque"
    return obj


def _patched(folder: Path, objects: list[dict], patch: dict) -> list[dict]:
    text = (folder / patch["path"]).read_text() if "path" in patch else patch["patch"]
    body = yaml.safe_load(text)
    target = patch.get("target")
    if isinstance(body, list):  # JSON 6902
        if target is None:
            raise Unsupported("a JSON 6902 patch needs a target")
        matched = [o for o in objects if _matches(o, target)]
        if not matched:
            raise ValueError(f"patch {patch} matches nothing")
        return [jsonpatch.apply_patch(o, body) if o in matched else o for o in objects]
    target = target or {"kind": body["kind"], "name": re.escape(body["metadata"]["name"])}
    matched = [o for o in objects if _matches(o, target)]
    if not matched:
        raise ValueError(f"patch {patch} matches nothing")
    return [strategic_merge(o, body) if o in matched else o for o in objects]


def _matches(obj: dict, target: dict) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise Unsupported(f"patch targets by {sorted(unknown)}")
    return obj["kind"] == target.get("kind", obj["kind"]) and re.fullmatch(
        target.get("name", ".*"), obj["metadata"]["name"]) is not None


def strategic_merge(base: object, patch: object) -> object:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = strategic_merge(merged[index[item["name"]]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _named(items: list) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def _set_image(objects: list[dict], image: dict) -> None:
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
