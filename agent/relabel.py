"""Prometheus-style relabelling of a target's labels (``__meta_*`` included) before export.

In: a label dict and a tuple of ``RelabelRule``. Out: the new label dict, or ``None`` when a
``keep``/``drop`` rule dropped the target. Semantics follow Prometheus' ``relabel_config``:
source values joined by ``separator``, ``regex`` anchored at both ends, ``$1``/``${1}``/``${name}``
in ``replacement`` and ``target_label``; a ``replace`` giving "" deletes the target label;
``hashmod`` sets ``target_label`` to (last 8 bytes of MD5 of the joined value, big-endian) mod
``modulus``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.errors import UsageError

__all__ = ["ACTIONS", "RelabelRule", "apply_rules", "parse_rule"]

ACTIONS = ("replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep")
_GROUP_REF = re.compile(r"\$(?:\{(\w+)\}|(\d+))")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class RelabelRule:
    action: str = "replace"
    source_labels: tuple[str, ...] = ()
    separator: str = ";"
    regex: str = "(.*)"
    target_label: str = ""
    replacement: str = "$1"
    modulus: int = 0
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(rf"^(?:{self.regex})$"))


def _expand(match: re.Match[str], template: str) -> str:
    def group(ref: re.Match[str]) -> str:
        name = ref.group(1) or ref.group(2)
        try:
            value = match.group(int(name) if name.isdigit() else name)
        except IndexError:  # a group the regex does not have expands to "", as in Go
            return ""
        return value or ""

    return _GROUP_REF.sub(group, template)


def apply_rules(labels: dict[str, str], rules: tuple[RelabelRule, ...]) -> dict[str, str] | None:
    """``labels`` after every rule in order; ``None`` when the target is dropped."""
    out = dict(labels)
    for rule in rules:
        action = rule.action
        if action in ("labelmap", "labeldrop", "labelkeep"):
            out = _apply_label_names(out, rule)
            continue
        value = rule.separator.join(out.get(name, "") for name in rule.source_labels)
        if action == "keep":
            if not rule.compiled.match(value):
                return None
        elif action == "drop":
            if rule.compiled.match(value):
                return None
        elif action == "hashmod":
            import hashlib  # here: it loads OpenSSL's libcrypto (~3.5 MB resident), which few configs need

            digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
            out[rule.target_label] = str(int.from_bytes(digest[8:], "big") % rule.modulus)
        else:  # replace
            match = rule.compiled.match(value)
            if match is None:
                continue
            target = _expand(match, rule.target_label)
            result = _expand(match, rule.replacement)
            if not _LABEL_NAME.match(target):
                continue
            if result:
                out[target] = result
            else:
                out.pop(target, None)
    return out


def _apply_label_names(labels: dict[str, str], rule: RelabelRule) -> dict[str, str]:
    pattern = rule.compiled
    if rule.action == "labeldrop":
        return {k: v for k, v in labels.items() if not pattern.match(k)}
    if rule.action == "labelkeep":
        return {k: v for k, v in labels.items() if pattern.match(k)}
    out = dict(labels)  # labelmap: copy matching names under the new name
    for name, value in labels.items():
        match = pattern.match(name)
        if match:
            out[_expand(match, rule.replacement)] = value
    return out


_KEYS = {"action", "source_labels", "separator", "regex", "target_label", "replacement", "modulus"}


def parse_rule(raw: object, where: str) -> RelabelRule:
    """A rule from its TOML table; ``UsageError`` naming ``where`` (``relabel[2].regex``) when wrong."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: must be a table")
    for key in raw:
        if key not in _KEYS:
            raise UsageError(f"{where}.{key}: unknown key (known: {', '.join(sorted(_KEYS))})")
    action = raw.get("action", "replace")
    if action not in ACTIONS:
        raise UsageError(f"{where}.action: {action!r} is not one of {', '.join(ACTIONS)}")
    sources = raw.get("source_labels", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise UsageError(f"{where}.source_labels: must be a list of label names")
    for key in ("separator", "regex", "target_label", "replacement"):
        if key in raw and not isinstance(raw[key], str):
            raise UsageError(f"{where}.{key}: must be a string")
    modulus = raw.get("modulus", 0)
    if not isinstance(modulus, int) or isinstance(modulus, bool) or modulus < 0:
        raise UsageError(f"{where}.modulus: must be a positive integer")
    kwargs = {k: raw[k] for k in ("separator", "regex", "target_label", "replacement") if k in raw}
    try:
        rule = RelabelRule(action=action, source_labels=tuple(sources), modulus=modulus, **kwargs)
    except re.error as exc:
        raise UsageError(f"{where}.regex: {exc}") from None
    if action in ("replace", "hashmod") and not rule.target_label:
        raise UsageError(f"{where}.target_label: required for action {action}")
    if action == "hashmod" and modulus < 1:
        raise UsageError(f"{where}.modulus: required (>= 1) for action hashmod")
    if action in ("keep", "drop", "hashmod") and not rule.source_labels:
        raise UsageError(f"{where}.source_labels: required for action {action}")
    return rule
