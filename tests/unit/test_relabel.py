"""Relabel rules: a table of cases, with expectations from Prometheus' documented semantics."""

from __future__ import annotations

import hashlib

import pytest

from agent.errors import UsageError
from agent.relabel import RelabelRule, apply_rules, parse_rule

BASE = {
    "__meta_process_exe": "/usr/sbin/nginx",
    "__meta_process_comm": "nginx",
    "__meta_systemd_unit": "nginx.service",
    "__meta_container_id": "",
    "service_name": "nginx",
    "host": "node-1",
}


def _md5_mod(text: str, mod: int) -> str:
    # Prometheus: the low 8 bytes of the MD5 sum, big-endian, modulo the modulus
    return str(int.from_bytes(hashlib.md5(text.encode()).digest()[8:], "big") % mod)


CASES = [
    # (name, rules, expected labels or None when dropped)
    ("replace copies a meta label",
     [{"source_labels": ["__meta_systemd_unit"], "target_label": "unit"}],
     {**BASE, "unit": "nginx.service"}),
    ("replace with a capture group",
     [{"source_labels": ["__meta_systemd_unit"], "regex": "(.*)\\.service", "target_label": "service_name",
       "replacement": "svc-$1"}],
     {**BASE, "service_name": "svc-nginx"}),
    ("replace joins sources with the separator",
     [{"source_labels": ["host", "__meta_process_comm"], "separator": "/", "target_label": "where"}],
     {**BASE, "where": "node-1/nginx"}),
    ("replace does nothing when the regex does not match (anchored)",
     [{"source_labels": ["__meta_process_comm"], "regex": "ngin", "target_label": "x"}],
     BASE),
    ("replace to an empty value deletes the label",
     [{"source_labels": ["__meta_container_id"], "target_label": "host"}],
     {k: v for k, v in BASE.items() if k != "host"}),
    ("replace with ${1} and a named group",
     [{"source_labels": ["__meta_process_exe"], "regex": "/usr/(?P<dir>\\w+)/(.*)", "target_label": "bin",
       "replacement": "${dir}:${2}"}],
     {**BASE, "bin": "sbin:nginx"}),
    ("replace with a target label built from the match",
     [{"source_labels": ["__meta_process_comm"], "regex": "(.*)", "target_label": "is_$1", "replacement": "yes"}],
     {**BASE, "is_nginx": "yes"}),
    ("keep keeps a matching target",
     [{"action": "keep", "source_labels": ["__meta_process_comm"], "regex": "nginx|redis"}],
     BASE),
    ("keep drops a target that does not match",
     [{"action": "keep", "source_labels": ["__meta_process_comm"], "regex": "redis"}],
     None),
    ("drop drops a matching target",
     [{"action": "drop", "source_labels": ["__meta_systemd_unit"], "regex": ".*\\.service"}],
     None),
    ("drop keeps a target that does not match",
     [{"action": "drop", "source_labels": ["__meta_systemd_unit"], "regex": "sshd\\.service"}],
     BASE),
    ("drop on an absent label matches the empty string",
     [{"action": "drop", "source_labels": ["__meta_kubernetes_namespace"], "regex": ""}],
     None),
    ("hashmod shards by the joined value",
     [{"action": "hashmod", "source_labels": ["host"], "modulus": 4, "target_label": "shard"}],
     {**BASE, "shard": _md5_mod("node-1", 4)}),
    ("hashmod then keep one shard",
     [{"action": "hashmod", "source_labels": ["host"], "modulus": 4, "target_label": "__tmp_shard"},
      {"action": "keep", "source_labels": ["__tmp_shard"], "regex": _md5_mod("node-1", 4)}],
     {**BASE, "__tmp_shard": _md5_mod("node-1", 4)}),
    ("labelmap copies meta labels under new names",
     [{"action": "labelmap", "regex": "__meta_process_(.+)", "replacement": "process_$1"}],
     {**BASE, "process_exe": "/usr/sbin/nginx", "process_comm": "nginx"}),
    ("labeldrop removes matching names",
     [{"action": "labeldrop", "regex": "__meta_.*"}],
     {"service_name": "nginx", "host": "node-1"}),
    ("labelkeep keeps only matching names",
     [{"action": "labelkeep", "regex": "service_name|__meta_process_comm"}],
     {"service_name": "nginx", "__meta_process_comm": "nginx"}),
    ("rules apply in order: a later rule sees an earlier one's label",
     [{"source_labels": ["__meta_process_comm"], "target_label": "app"},
      {"source_labels": ["app"], "regex": "nginx", "target_label": "tier", "replacement": "web"}],
     {**BASE, "app": "nginx", "tier": "web"}),
]


@pytest.mark.parametrize(("rules", "expected"), [(r, e) for _, r, e in CASES], ids=[c[0] for c in CASES])
def test_relabel_table(rules: list[dict[str, object]], expected: dict[str, str] | None) -> None:
    parsed = tuple(parse_rule(raw, f"relabel[{i}]") for i, raw in enumerate(rules))
    assert apply_rules(BASE, parsed) == expected


@pytest.mark.parametrize(("raw", "message"), [
    ({"action": "rename"}, "relabel[0].action: 'rename' is not one of"),
    ({"action": "replace", "source_labels": ["a"]}, "relabel[0].target_label: required"),
    ({"action": "hashmod", "source_labels": ["a"], "target_label": "b"}, "relabel[0].modulus: required"),
    ({"action": "keep"}, "relabel[0].source_labels: required"),
    ({"regex": "(", "target_label": "x"}, "relabel[0].regex:"),
    ({"sources": ["a"]}, "relabel[0].sources: unknown key"),
    ({"source_labels": "a", "target_label": "x"}, "relabel[0].source_labels: must be a list"),
])
def test_bad_rules_are_refused_naming_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_rule(raw, "relabel[0]")


def test_default_rule_is_a_replace_of_the_whole_value() -> None:
    rule = RelabelRule(source_labels=("a",), target_label="b")
    assert apply_rules({"a": "x"}, (rule,)) == {"a": "x", "b": "x"}
