"""`lipstream serve --config lipstream.toml`: the flags' own names as TOML keys, under flags and env.

A key is a flag without its dashes, in snake case (`--max-sessions 8` is `max_sessions = 8`); a repeatable
flag takes a list. Precedence, strongest first: the command line, the environment, the file, the default.
The environment variable of a setting is the one its `--help` names, so the two never disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ConfigFileError", "apply_config_file", "dump_settings", "read_config_file"]

_ENV_IN_HELP = re.compile(r"env (LIPSTREAM_[A-Z0-9_]+)")
_NOT_SETTINGS = frozenset({"help", "config", "print_config"})


class ConfigFileError(ValueError):
    """The config file cannot be read or holds a key or value the server does not take."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The file's table; a ConfigFileError names the file and what is wrong with it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigFileError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"the config file {path} is not valid TOML: {exc}") from exc


def setting_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's settings by key (its dest), without --help, --config and --print-config."""
    return {
        action.dest: action
        for action in parser._actions  # argparse offers no public list of its actions
        if action.dest not in _NOT_SETTINGS and action.dest != argparse.SUPPRESS
    }


def apply_config_file(
    parser: argparse.ArgumentParser,
    values: Mapping[str, Any],
    source: str,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Makes the file's values the parser's defaults, except where the setting's env variable is set."""
    actions = setting_actions(parser)
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ConfigFileError(
            f"{source}: unknown keys {', '.join(unknown)}; the keys are the flags of `lipstream serve "
            f"--help` in snake case: {', '.join(sorted(actions))}"
        )
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        action = actions[key]
        env = _ENV_IN_HELP.search(action.help or "")
        if env is not None and env.group(1) in environ:
            continue
        defaults[key] = _checked(source, key, action, value)
    parser.set_defaults(**defaults)


def _checked(source: str, key: str, action: argparse.Action, value: Any) -> Any:
    def wrong(expected: str) -> ConfigFileError:
        return ConfigFileError(f"{source}: {key} = {_short(value)} must be {expected}")

    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise wrong('a list of strings, e.g. ["a", "b"]')
        return list(value)
    if action.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if action.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        return float(value)
    if not isinstance(value, str):
        raise wrong("a string")
    if action.choices is not None and value not in action.choices:
        raise wrong("one of " + ", ".join(f'"{choice}"' for choice in action.choices))
    return value


def dump_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The resolved settings as a config file that `--config` reads back."""
    lines = ["# lipstream serve: resolved settings (flags > env > config file > defaults)"]
    for key in sorted(setting_actions(parser)):
        lines.append(f"{key} = {_toml_value(getattr(args, key))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps("" if value is None else str(value), ensure_ascii=False)  # a TOML basic string


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
