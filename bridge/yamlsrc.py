"""YAML loading that remembers where each key was, so errors can name the line.

`load_yaml(path)` returns the data (safe loader) and a `Locator` that maps a key path such as
`("delivery", "rate_limit", "per_second")` or `("rules", 3, "when")` to a 1-based line number.
Also expands `${VAR}` / `${VAR:-default}` in string values (never in keys) from an environment mapping.

Config and rule files are hand-written text, so the loader refuses what only an attack or an accident makes:
a file over `MAX_BYTES`, nesting deeper than `MAX_DEPTH`, or aliases that expand the document past
`MAX_NODES` nodes or `MAX_EXPANDED_BYTES` of scalar text ("billion laughs": a 1 KB file that expands to
10^9 strings). The limits are checked on the event stream, before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000  # after alias expansion
MAX_EXPANDED_BYTES = 4 * MAX_BYTES  # scalar text after alias expansion

_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


@dataclass(frozen=True, slots=True)
class Locator:
    """Line numbers of the keys and items of one YAML document."""

    lines: dict[PathKey, int] = field(default_factory=dict)

    def line(self, path: PathKey) -> int | None:
        """The line of `path`, or of its closest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None


class YamlLoadError(Exception):
    """The file is not readable YAML; `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class MissingEnvError(Exception):
    """`${VAR}`s without default name unset variables: `missing` holds (name, key path) of each, in file order."""

    def __init__(self, missing: list[tuple[str, PathKey]]) -> None:
        super().__init__(", ".join(name for name, _ in missing))
        self.missing = missing


def _walk(node: yaml.Node, path: PathKey, out: dict[PathKey, int], depth: int = 0) -> None:
    if depth > 64:
        return
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            sub = (*path, key)
            out[sub] = key_node.start_mark.line + 1
            _walk(value_node, sub, out, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, i)
            out[sub] = item.start_mark.line + 1
            _walk(item, sub, out, depth + 1)


def _line(event: yaml.Event) -> int | None:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else None


def _check_bounds(text: str) -> None:
    """YamlLoadError if the document is too large, too deep, or its aliases expand it too much."""
    if len(text) > MAX_BYTES:
        raise YamlLoadError(f"file of {len(text):,} characters is too large for a config (at most {MAX_BYTES:,})")
    anchored: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, scalar bytes) of the anchored node, expanded
    open_nodes: list[list[Any]] = [[None, 0, 0]]  # [anchor, nodes, bytes] of each collection being read
    total_nodes = total_bytes = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) > MAX_DEPTH:
                raise YamlLoadError(f"nested more than {MAX_DEPTH} levels deep", _line(event))
            open_nodes.append([event.anchor, 1, 0])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, nodes, size = open_nodes.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, nodes, size = event.anchor, 1, len(event.value)
        elif isinstance(event, yaml.AliasEvent):
            anchor = None
            nodes, size = anchored.get(event.anchor or "", (1, 0))
            total_nodes += nodes
            total_bytes += size
            if total_nodes > MAX_NODES or total_bytes > MAX_EXPANDED_BYTES:
                raise YamlLoadError(
                    f"aliases expand the document past {MAX_NODES:,} nodes or {MAX_EXPANDED_BYTES:,} bytes"
                    f" (at *{event.anchor})",
                    _line(event),
                )
        else:
            continue
        if anchor is not None:
            anchored[anchor] = (nodes, size)
        parent = open_nodes[-1]
        parent[1] += nodes
        parent[2] += size
    if open_nodes[0][1] > MAX_NODES:
        raise YamlLoadError(f"document of more than {MAX_NODES:,} nodes is too large for a config")


def parse_yaml(text: str) -> tuple[Any, Locator]:
    """Parse YAML text into (data, locator); YamlLoadError for bad YAML or a document past the bounds."""
    try:
        _check_bounds(text)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlLoadError(f"not valid YAML: {exc.problem or exc}", line) from exc
    except yaml.YAMLError as exc:
        raise YamlLoadError(f"not valid YAML: {exc}") from exc
    lines: dict[PathKey, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, Locator(lines)


def load_yaml(path: Path) -> tuple[Any, Locator]:
    """Read and parse a YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlLoadError(f"cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise YamlLoadError(f"not UTF-8 text: {exc}") from exc
    return parse_yaml(text)


def expand_env(data: Any, env: Mapping[str, str]) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string value; `$$` is a literal `$`.

    An unset (or empty) `${VAR}` without default is an error; every such variable is reported at once.
    """
    missing: list[tuple[str, PathKey]] = []
    expanded = _expand(data, env, (), missing)
    if missing:
        raise MissingEnvError(missing)
    return expanded


def _expand(data: Any, env: Mapping[str, str], path: PathKey, missing: list[tuple[str, PathKey]]) -> Any:
    if isinstance(data, str):
        if "$" not in data:
            return data

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            value = env.get(name)
            if not value:  # unset or empty: a forgotten `-e VAR` must not pass as an empty credential
                if default is None:
                    missing.append((name, path))
                    return ""
                return default
            return value

        return _ENV_RE.sub(sub, data)
    if isinstance(data, dict):
        return {k: _expand(v, env, (*path, str(k)), missing) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand(v, env, (*path, i), missing) for i, v in enumerate(data)]
    return data


def dotted(path: PathKey) -> str:
    """`("rules", 3, "when")` -> `rules[3].when`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
