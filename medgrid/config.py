"""Checks of the workflow's config that JSON Schema does not make readable or cannot state.

The schema (workflow/schemas/config.schema.yaml) rejects an unknown key, but Snakemake's message for it holds a
dump of the whole config; :func:`unknown_keys` names the key, where it is, and the closest valid one, before the
schema runs. :func:`warmup_errors` checks what spans two keys: an epsilon warm-up must leave epochs after it.
Plain Python: the workflow imports it (workflow/rules/common.smk).
"""

from __future__ import annotations

import difflib


def unknown_keys(config: dict, schema: dict, where: str = "", root: dict | None = None) -> list[str]:
    """One line per key of ``config`` the schema does not allow (closed objects: ``additionalProperties`` or
    ``unevaluatedProperties`` false), searched recursively through local ``$ref``s, with the closest allowed key."""
    root = schema if root is None else root
    node = _object(schema, root)
    lines = []
    if not isinstance(config, dict) or not node:
        return lines
    props, closed, extra = node["properties"], node["closed"], node["extra"]
    for key, value in config.items():
        path = f"{where}{key}"
        if key in props:
            lines += unknown_keys(value, props[key], path + ".", root)
        elif isinstance(extra, dict):
            lines += unknown_keys(value, extra, path + ".", root)
        elif closed and props:
            close = difflib.get_close_matches(str(key), list(props), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; valid: {', '.join(props)}"
            lines.append(f"config: unknown key {path}{hint}")
    return lines


def _object(node, root: dict) -> dict | None:
    """The object view of a schema node: its properties (its $ref's merged in), whether it is closed, and the
    schema of its other keys; None when the node does not describe an object."""
    if not isinstance(node, dict):
        return None
    if "$ref" in node and node["$ref"].startswith("#/"):
        target = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        base = _object(target, root) or {"properties": {}, "closed": False, "extra": None}
    else:
        base = {"properties": {}, "closed": False, "extra": None}
    if not ("properties" in node or "additionalProperties" in node or "$ref" in node or node.get("type") == "object"):
        for alt in node.get("oneOf", []):
            found = _object(alt, root)
            if found:
                return found
        return None
    extra = node.get("additionalProperties")
    return {"properties": {**base["properties"], **node.get("properties", {})},
            "closed": base["closed"] or extra is False or node.get("unevaluatedProperties") is False,
            "extra": extra if isinstance(extra, dict) else base["extra"]}


def warmup_errors(hparams: dict) -> list[str]:
    """One line per arch whose adversarial cells would warm epsilon up for all their epochs or more."""
    lines = []
    for arch, hp in hparams.items():
        merged = {k: v for k, v in hp.items() if k not in ("standard", "adversarial")}
        merged.update(hp.get("adversarial", {}) or {})
        warmup, epochs = merged.get("eps_warmup_epochs") or 0, merged.get("epochs")
        if epochs is not None and warmup >= epochs:
            lines.append(f"config: hparams.{arch}: eps_warmup_epochs ({warmup}) must be smaller than the adversarial "
                         f"cells' epochs ({epochs}): only epochs after the warm-up can be kept")
    return lines
