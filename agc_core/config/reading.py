"""Reading configuration files: typed access to YAML mappings with errors that name the file,
the dotted key and its line; numbers as small arithmetic expressions."""

from __future__ import annotations

import ast
import operator
from pathlib import Path
from typing import Any

import yaml

from agc_core.errors import ConfigError

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def evaluate_number(value: Any, key: str, path: Path) -> float:
    """Evaluate a number or a small arithmetic expression string (``+ - * /``, parentheses).

    Args:
        value: a number or a string such as ``"(36.993 + 22.175) / 0.252"``.
        key: the config key, for error messages.
        path: the config file, for error messages.

    Returns:
        The value as float.

    Raises:
        ConfigError: if the value is neither a number nor a valid expression.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{path}: key '{key}' must be a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{path}: key '{key}' must be a number or expression, got {value!r}")

    def _eval(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return _eval(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -_eval(node.operand)
        raise ValueError(ast.dump(node))

    try:
        result = _eval(ast.parse(value, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"{path}: key '{key}' is not a valid expression: {value!r}") from exc
    return result


class _Reader:
    """Typed access to a nested mapping with errors naming the dotted key and the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, mapping: Any, key: str, prefix: str = "") -> Any:
        full = f"{prefix}.{key}" if prefix else key
        if not isinstance(mapping, dict):
            raise ConfigError(f"{self.path}: key '{prefix}' must be a mapping")
        if key not in mapping:
            raise ConfigError(f"{self.path}: missing key '{full}'")
        return mapping[key]

    def number(self, mapping: Any, key: str, prefix: str = "", positive: bool = False) -> float:
        full = f"{prefix}.{key}" if prefix else key
        value = evaluate_number(self.get(mapping, key, prefix), full, self.path)
        if positive and not value > 0:
            raise ConfigError(f"{self.path}: key '{full}' must be positive, got {value}")
        return value

    def integer(self, mapping: Any, key: str, prefix: str = "", minimum: int = 0) -> int:
        full = f"{prefix}.{key}" if prefix else key
        value = self.get(mapping, key, prefix)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{self.path}: key '{full}' must be an integer >= {minimum}, "
                              f"got {value!r}")
        return value

    def string(self, mapping: Any, key: str, prefix: str = "") -> str:
        full = f"{prefix}.{key}" if prefix else key
        value = self.get(mapping, key, prefix)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.path}: key '{full}' must be a non-empty string")
        return value

    def strings(self, mapping: Any, key: str, prefix: str = "") -> tuple[str, ...]:
        full = f"{prefix}.{key}" if prefix else key
        value = self.get(mapping, key, prefix)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.path}: key '{full}' must be a non-empty list of strings")
        return tuple(value)


class _LineDict(dict):
    """A YAML mapping that remembers the line of each key (for error messages)."""

    lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`_LineDict`."""


def _construct_line_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                            _construct_line_mapping)


def _read_yaml_with_lines(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc.strerror})") from exc
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc


class _FitReader(_Reader):
    """:class:`_Reader` plus unknown-key checks naming the line."""

    def at(self, mapping: Any, key: Any) -> str:
        line = getattr(mapping, "lines", {}).get(key)
        return f" (line {line})" if line else ""

    def check_keys(self, mapping: Any, allowed: tuple[str, ...], prefix: str,
                   optional: tuple[str, ...] = ()) -> None:
        if not isinstance(mapping, dict):
            raise ConfigError(f"{self.path}: key '{prefix or '<top level>'}' must be a mapping")
        for key in mapping:
            if key not in allowed and key not in optional:
                full = f"{prefix}.{key}" if prefix else str(key)
                raise ConfigError(f"{self.path}: unknown key '{full}'{self.at(mapping, key)} "
                                  f"(allowed: {', '.join(allowed + optional)})")

    def items(self, mapping: Any, key: str) -> list[Any]:
        value = self.get(mapping, key)
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{self.path}: key '{key}'{self.at(mapping, key)} must be a "
                              "non-empty list")
        return value
