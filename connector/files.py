"""The project's text files (connector.yml, .env, mappings, queries): read as UTF-8 (and YAML), or a
ConfigError naming the file, the line and what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

UTF8_HINT = "save it as UTF-8"


def read_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror or exc}",
                          "check that it is a readable file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}", f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}",
                          UTF8_HINT) from None


def load_yaml(path: Path) -> Any:
    """A YAML file of the project, or a ConfigError naming the file and line."""
    text = read_utf8(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(where, "not valid YAML", str(getattr(exc, "problem", None) or exc)) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer longer than Python converts (4300 digits)
        raise ConfigError(str(path), "not valid YAML", f"{str(exc)[:200]}") from None
