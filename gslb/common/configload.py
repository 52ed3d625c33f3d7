"""Config reading shared by `gslb` and `regional-lb`  [pure].

A config file is YAML; each program turns it into frozen dataclasses with one
loader that walks the document through a `Section` cursor. Every error names
the file, the key path and the reason, and unknown keys are refused (with a
"did you mean" hint for misspellings), so a typo never silently changes
behaviour:

    ConfigError
        raised for any problem; str() is "FILE: key.path: reason"

Usage, in a loader::

    root = Section.from_yaml_text(text, file="gslb.yaml")
    dns = root.section("dns")
    port = dns.take("port", int, default=53)
    dns.done()          # refuses keys that were not taken
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_MISSING: Any = object()


class ConfigError(Exception):
    """A config file is invalid: the file, the key path and the reason."""

    def __init__(self, file: str, path: str, reason: str) -> None:
        super().__init__(f"{file}: {path or '<top>'}: {reason}")
        self.file = file
        self.path = path
        self.reason = reason


def _type_name(kind: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


class Section:
    """A cursor over one mapping of a config document, remembering its key path."""

    def __init__(self, data: Any, *, file: str, path: str = "") -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(file, path, f"expected a mapping, got {type(data).__name__}")
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(file, path, f"keys must be strings, got {key!r}")
        self.data: dict[str, Any] = data
        self.file = file
        self.path = path
        self._taken: set[str] = set()

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_yaml_text(cls, text: str, *, file: str) -> Section:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            raise ConfigError(file, "", f"not valid YAML ({where}): {getattr(exc, 'problem', exc)}") from None
        return cls(data, file=file)

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

    def error(self, key: str | int | None, reason: str) -> ConfigError:
        return ConfigError(self.file, self.path if key is None else self.key_path(key), reason)

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
            raise self.error(key, f"expected {expected}, got {value!r}")
        if check is not None:
            reason = check(value)
            if reason:
                raise self.error(key, reason)
        return value

    def take_choice(self, key: str, choices: tuple[str, ...] | list[str], default: Any = _MISSING) -> str:
        value = self.take(key, str, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def take_number(self, key: str, default: Any = _MISSING, *, minimum: float | None = None,
                    maximum: float | None = None, integer: bool = False) -> Any:
        kind: type = int if integer else float
        value = self.take(key, kind, default)
        if value is None:
            return None
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be <= {maximum}, got {value}")
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
            raise self.error(key, "expected a duration such as 2, 1.5, '500ms', '2s', '5m', "
                                  f"got {self.data[key]!r}")
        if seconds < minimum:
            raise self.error(key, f"must be >= {minimum}s, got {seconds}s")
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
            return Section({}, file=self.file, path=self.key_path(key))
        return Section(self.data[key], file=self.file, path=self.key_path(key))

    def sections(self, key: str, *, required: bool = False) -> list[Section]:
        """A list of mappings under `key`, each as a Section with an indexed path."""
        items = self.take_list(key, _MISSING if required else [])
        base = Section({}, file=self.file, path=self.key_path(key))
        return [Section(item, file=self.file, path=base.key_path(i)) for i, item in enumerate(items)]

    def named_sections(self, key: str, *, required: bool = False) -> Iterator[tuple[str, Section]]:
        """A mapping of name -> mapping under `key` (e.g. regions by name)."""
        sect = self.section(key, required=required)
        if required and not sect.data:
            raise self.error(key, "must not be empty")
        for name in sect.data:
            sect._taken.add(name)
            yield name, Section(sect.data[name], file=self.file, path=sect.key_path(name))

    def done(self) -> None:
        """Refuse keys that the loader did not take (a misspelling, or a key from elsewhere)."""
        unknown = [k for k in self.data if k not in self._taken]
        if not unknown:
            return
        key = unknown[0]
        hint = difflib.get_close_matches(key, sorted(self._taken), n=1)
        suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
        known = ", ".join(sorted(self._taken)) or "none"
        raise self.error(key, f"unknown key{suffix}; known keys here: {known}")


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like "250ms", "2s", "1.5m", "1h"; None if not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit):
            number = text[: -len(unit)].strip()
            try:
                return float(number) * _UNITS[unit]
            except ValueError:
                return None
    try:
        return float(text)
    except ValueError:
        return None
