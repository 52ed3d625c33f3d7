"""Config reading shared by `gslb` and `regional-lb`  [pure].

A config file is YAML; each program turns it into frozen dataclasses with one
loader that walks the document through a `Section` cursor. Every error names
the file, the key path and the reason, and unknown keys are refused (with a
"did you mean" hint for misspellings), so a typo never silently changes
behaviour:

    ConfigError
        raised for any problem; str() is "FILE: key.path: reason", one line per
        problem when there are several (`errors`: each one, with its `line`)

Usage, in a loader::

    root = Section.from_yaml_text(text, file="gslb.yaml")
    dns = root.section("dns")
    port = dns.take("port", int, default=53)
    dns.done()          # refuses keys that were not taken

    config = Section.load(root, build)      # build(root), then every problem at once

Every problem is reported, as `haproxy -c` does, not only the first: a key that has a
default and a bad value is recorded and its default used so that loading goes on, and
every unknown key is recorded; a problem with no way around it (a required key missing or
bad, a check across sections) stops the loading there, and is reported with those before
it. Each error carries the line of the offending key in the file (`ConfigError.line`,
`where()` gives "FILE:LINE: key.path: reason", what `check-config` prints).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_MISSING: Any = object()


class ConfigError(Exception):
    """A config file is invalid: the file, the key path and the reason (and the line, when known)."""

    def __init__(self, file: str, path: str, reason: str, line: int | None = None) -> None:
        super().__init__(f"{file}: {path or '<top>'}: {reason}")
        self.file = file
        self.path = path
        self.reason = reason
        self.line = line
        self.errors: list[ConfigError] = [self]

    @classmethod
    def several(cls, errors: list[ConfigError]) -> ConfigError:
        """One error standing for all of `errors` (the first's fields; str() lists every one)."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        combined = cls(first.file, first.path, first.reason, first.line)
        combined.args = ("\n".join(str(e) for e in errors),)
        combined.errors = list(errors)
        return combined

    def where(self) -> str:
        """"FILE:LINE: key.path: reason" (without ":LINE" when the line is not known)."""
        line = f":{self.line}" if self.line is not None else ""
        return f"{self.file}{line}: {self.path or '<top>'}: {self.reason}"


def by_line(error: ConfigError) -> int:
    """A sort key: errors in file order (those without a line first)."""
    return error.line if error.line is not None else 0


class _LineLoader(yaml.SafeLoader):
    """yaml.SafeLoader that records the line (1-based) of every mapping key and list item in
    `self.lines`, keyed by id() of the container built; the containers stay plain dicts and lists,
    alive as long as the document, so their ids stay theirs."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[int, dict[Any, int]] = {}


def _construct_yaml_map(loader: _LineLoader, node: yaml.MappingNode) -> Any:
    data: dict[Any, Any] = {}
    yield data
    data.update(loader.construct_mapping(node))
    lines: dict[Any, int] = {}
    for key_node, _value in node.value:          # merged (<<) keys included: flattened by now
        key = loader.construct_object(key_node)
        if isinstance(key, str | int):
            lines.setdefault(key, key_node.start_mark.line + 1)
    loader.lines[id(data)] = lines


def _construct_yaml_seq(loader: _LineLoader, node: yaml.SequenceNode) -> Any:
    data: list[Any] = []
    yield data
    data.extend(loader.construct_sequence(node))
    loader.lines[id(data)] = {i: child.start_mark.line + 1 for i, child in enumerate(node.value)}


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_yaml_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_yaml_seq)


def _type_name(kind: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}
    return names.get(kind, kind.__name__ if isinstance(kind, type) else str(kind))


class Section:
    """A cursor over one mapping of a config document, remembering its key path."""

    def __init__(self, data: Any, *, file: str, path: str = "", line: int | None = None,
                 lines: dict[int, dict[Any, int]] | None = None, errors: list[ConfigError] | None = None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(file, path, f"expected a mapping, got {type(data).__name__}", line)
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(file, path, f"keys must be strings, got {key!r}", line)
        self.data: dict[str, Any] = data
        self.file = file
        self.path = path
        self.line = line                        # where this mapping's key is (None: unknown, the top)
        self._lines = lines if lines is not None else {}
        # Problems recorded to report together, shared by every Section of a document; None: raise
        # each at once (a Section used on its own, outside Section.load).
        self.errors = errors
        self._taken: set[str] = set()

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_yaml_text(cls, text: str, *, file: str) -> Section:
        loader = _LineLoader(text)
        try:
            data = loader.get_single_data()
        except yaml.YAMLError as exc:
            problem, mark = (exc.problem, exc.problem_mark) if isinstance(exc, yaml.MarkedYAMLError) else (exc, None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            raise ConfigError(file, "", f"not valid YAML ({where}): {problem}",
                              mark.line + 1 if mark else None) from None
        finally:
            loader.dispose()
        return cls(data, file=file, lines=loader.lines)

    @staticmethod
    def load(root: Section, build: Callable[[Section], T]) -> T:
        """`build(root)`, then every problem recorded on the way raised as one ConfigError."""
        if root.errors is None:
            root.errors = []
        errors = root.errors
        try:
            result = build(root)
        except ConfigError as exc:
            errors.extend(e for e in exc.errors if e not in errors)
        if errors:
            raise ConfigError.several(errors)
        return result

    @classmethod
    def from_file(cls, path: str | Path) -> Section:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(path), "", f"cannot read file: {exc.strerror or exc}") from None
        return cls.from_yaml_text(text, file=str(path))

    # -- helpers -----------------------------------------------------------------
    def key_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str | int | None, container: Any = None) -> int | None:
        """The line of `key` in this mapping (or in `container`, a list or mapping under it)."""
        if key is None:
            return self.line
        lines = self._lines.get(id(self.data if container is None else container))
        return lines.get(key, self.line) if lines else self.line

    def error(self, key: str | int | None, reason: str) -> ConfigError:
        return ConfigError(self.file, self.path if key is None else self.key_path(key), reason, self.line_of(key))

    def record(self, error: ConfigError) -> None:
        """Note a problem and go on (Section.load raises them all at the end); outside Section.load,
        raise it."""
        if self.errors is None:
            raise error
        self.errors.append(error)

    def _child(self, data: Any, path: str, line: int | None) -> Section:
        return Section(data, file=self.file, path=path, line=line, lines=self._lines, errors=self.errors)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def keys(self) -> list[str]:
        return list(self.data)

    # -- reading -----------------------------------------------------------------
    def take(self, key: str, kind: type[T] | tuple[type, ...], default: Any = _MISSING,
             *, check: Callable[[Any], str | None] | None = None) -> Any:
        """Take `key`, checked to be of `kind`; `default` when absent (required if no default).

        `check(value)` may return a reason string to reject the value.
        """
        self._taken.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            expected = " or ".join(_type_name(k) for k in kinds)
            return self._bad(key, f"expected {expected}, got {value!r}", default)
        if check is not None:
            reason = check(value)
            if reason:
                return self._bad(key, reason, default)
        return value

    def _bad(self, key: str, reason: str, default: Any) -> Any:
        """A bad value: with a default, recorded and the default used (loading goes on); else raised."""
        error = self.error(key, reason)
        if default is _MISSING:
            raise error
        self.record(error)
        return default

    def take_choice(self, key: str, choices: tuple[str, ...] | list[str], default: Any = _MISSING) -> str:
        value = self.take(key, str, default)
        if value not in choices:
            return str(self._bad(key, f"must be one of {', '.join(choices)}, got {value!r}", default))
        return str(value)

    def take_number(self, key: str, default: Any = _MISSING, *, minimum: float | None = None,
                    maximum: float | None = None, integer: bool = False) -> Any:
        kind: type = int if integer else float
        value = self.take(key, kind, default)
        if value is None:
            return None
        if minimum is not None and value < minimum:
            return self._bad(key, f"must be >= {minimum}, got {value}", default)
        if maximum is not None and value > maximum:
            return self._bad(key, f"must be <= {maximum}, got {value}", default)
        return value

    def take_duration(self, key: str, default: Any = _MISSING, *, minimum: float = 0.0) -> Any:
        """A duration in seconds: a number, or a string like "500ms", "2s", "5m", "1h"."""
        self._taken.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        seconds = parse_duration(self.data[key])
        if seconds is None:
            return self._bad(key, "expected a duration such as 2, 1.5, '500ms', '2s', '5m', "
                                  f"got {self.data[key]!r}", default)
        if seconds < minimum:
            return self._bad(key, f"must be >= {minimum}s, got {seconds}s", default)
        return seconds

    def take_ip(self, key: str, default: Any = _MISSING) -> Any:
        value = self.take(key, str, default)
        if value is None or value is default:
            return value
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            raise self.error(key, f"not an IP address: {value!r}") from None

    def take_list(self, key: str, default: Any = _MISSING) -> Any:
        """A list (copied), or `default` when absent."""
        value = self.take(key, list, default)
        return list(value) if isinstance(value, list) else value

    def take_token(self, key: str = "token") -> str | None:
        """A secret given inline (`token`) or read from a file (`token_file`, relative to the config file).

        None when neither is given; an empty token is refused (omit the key to disable what it guards)."""
        token = self.take(key, str, None)
        file_key = f"{key}_file"
        token_file = self.take(file_key, str, None)
        if token is not None and token_file is not None:
            raise self.error(file_key, f"give {key} or {file_key}, not both")
        if token_file is not None:
            path = Path(self.file).parent / token_file
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise self.error(file_key, f"cannot read {path}: {exc.strerror}") from None
        if token is not None and not token:
            raise self.error(key if token_file is None else file_key, "must not be empty (omit it instead)")
        return token

    def section(self, key: str, *, required: bool = False) -> Section:
        self._taken.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "is required")
            return self._child({}, self.key_path(key), self.line_of(key))
        return self._child(self.data[key], self.key_path(key), self.line_of(key))

    def sections(self, key: str, *, required: bool = False) -> list[Section]:
        """A list of mappings under `key`, each as a Section with an indexed path."""
        raw = self.data.get(key)
        items = self.take_list(key, _MISSING if required else [])
        base = self._child({}, self.key_path(key), self.line_of(key))
        return [self._child(item, base.key_path(i), self.line_of(i, raw) if isinstance(raw, list) else base.line)
                for i, item in enumerate(items)]

    def named_sections(self, key: str, *, required: bool = False) -> Iterator[tuple[str, Section]]:
        """A mapping of name -> mapping under `key` (e.g. regions by name)."""
        sect = self.section(key, required=required)
        if required and not sect.data:
            raise self.error(key, "must not be empty")
        for name in sect.data:
            sect._taken.add(name)
            yield name, sect._child(sect.data[name], sect.key_path(name), sect.line_of(name))

    def done(self) -> None:
        """Refuse keys that the loader did not take (a misspelling, or a key from elsewhere)."""
        known = ", ".join(sorted(self._taken)) or "none"
        for key in self.data:
            if key in self._taken:
                continue
            hint = difflib.get_close_matches(key, sorted(self._taken), n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.record(self.error(key, f"unknown key{suffix}; known keys here: {known}"))


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like "250ms", "2s", "1.5m", "1h"; None if not a duration
    (also for nan and infinity, "inf" or an overflow like "1e999": no timer can wait for those)."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            text = value.strip().lower()
            unit = next((u for u in ("ms", "s", "m", "h", "d") if text.endswith(u)), None)
            seconds = float(text[: -len(unit)].strip()) * _UNITS[unit] if unit else float(text)
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None
