"""Read a TOML file into the same specs that code builds; check it all before starting.

Layout::

    [system]                      # optional: log_level, base, call_timeout, op_timeout,
                                  # and the root's policy keys (strategy, max_restarts, ...)
    [[supervisor]]                # name, strategy, max_restarts, period, backoff = {...},
                                  # fatal_errors, restart, shutdown_timeout, hooks = ["m:C"]
    [[supervisor.tool]]           # name, actor = "module:Class", restart, security_level,
                                  # config = {...}, shutdown_timeout, start_timeout, hold_limit
    [[supervisor.supervisor]]     # nested supervisors, same keys; started after the tools

Every problem raises ``ConfigError`` naming the file and the key (or the line,
for TOML syntax errors); nothing is started until the whole file is valid.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from actors.breaker import Breaker
from actors.loading import load_object
from actors.shell import BASES
from supervisors.tree.hooks import LifecycleHook
from supervisors.tree.policy import Backoff, Policy, Retry, SpecError
from supervisors.tree.specs import supervisor_spec, tool_spec

POLICY_KEYS = {"strategy", "max_restarts", "period", "backoff", "fatal_errors", "breaker",
               "transient", "retry"}
SYSTEM_KEYS = {"dashboard", "log_level", "base", "call_timeout", "op_timeout",
               "sample_every", "data_dir"} | POLICY_KEYS
SUPERVISOR_KEYS = POLICY_KEYS | {"name", "restart", "shutdown_timeout", "hooks", "tool",
                                 "supervisor"}
TOOL_KEYS = {"name", "actor", "restart", "security_level", "config", "shutdown_timeout",
             "start_timeout", "hold_limit", "limits", "on_limit", "adaptive", "hard_memory"}
BACKOFF_KEYS = {"initial", "maximum", "multiplier", "jitter", "reset_after"}


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file and the key or line."""


@dataclass
class Config:
    system_options: dict[str, Any] = field(default_factory=dict)
    supervisors: list[dict[str, Any]] = field(default_factory=list)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}")
    return parse_config(text, str(path))


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}")
    _only(data, {"system", "supervisor"}, "", source)
    cfg = Config()
    system = data.get("system", {})
    _table(system, "system", source)
    _only(system, SYSTEM_KEYS, "system", source)
    if "dashboard" in system:
        logger.warning("{}: [system].dashboard is not available in this version yet; ignored", source)
    options: dict[str, Any] = {}
    for key in ("log_level", "base", "call_timeout", "op_timeout", "sample_every", "data_dir"):
        if key in system:
            options[key] = _system_value(key, system[key], source)
    if POLICY_KEYS & system.keys():
        options["policy"] = _policy(system, "system", source)
    cfg.system_options = options
    sups = data.get("supervisor", [])
    if not isinstance(sups, list):
        raise ConfigError(f"{source}: 'supervisor' must be an array of tables ([[supervisor]])")
    names: set[str] = set()
    for i, sup in enumerate(sups):
        spec = _supervisor(sup, f"supervisor[{i}]", source)
        if spec["name"] in names:
            raise ConfigError(f"{source}: supervisor[{i}].name: {spec['name']!r} is used twice")
        names.add(spec["name"])
        cfg.supervisors.append(spec)
    return cfg


LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def _system_value(key: str, value: Any, source: str) -> Any:
    if key == "log_level" and not (isinstance(value, str) and value.upper() in LOG_LEVELS):
        raise ConfigError(f"{source}: system.log_level={value!r} is invalid: use one of "
                          f"{', '.join(LOG_LEVELS)}")
    if key == "base" and value not in BASES:
        raise ConfigError(f"{source}: system.base={value!r} is invalid: use one of {', '.join(BASES)}")
    if key in ("call_timeout", "op_timeout", "sample_every") and not (
            isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise ConfigError(f"{source}: system.{key}={value!r} is invalid: must be a number > 0 (seconds)")
    if key == "data_dir" and not (isinstance(value, str) and value) and value is not False:
        raise ConfigError(f"{source}: system.data_dir={value!r} is invalid: give a directory path "
                          "(or false for no context store)")
    return value


def _supervisor(table: Any, where: str, source: str) -> dict[str, Any]:
    _table(table, where, source)
    where = _label(table, where)
    _only(table, SUPERVISOR_KEYS, where, source)
    if "name" not in table:
        raise ConfigError(f"{source}: {where}: missing 'name'")
    children: list[dict[str, Any]] = []
    for kind, build in (("tool", _tool), ("supervisor", _supervisor)):
        items = table.get(kind, [])
        if not isinstance(items, list):
            raise ConfigError(f"{source}: {where}.{kind} must be an array of tables")
        for j, item in enumerate(items):
            children.append(build(item, f"{where}.{kind}[{j}]", source))
    hooks = [_hook(h, f"{where}.hooks[{k}]", source) for k, h in enumerate(table.get("hooks", []))]
    options = {k: table[k] for k in ("restart", "shutdown_timeout") if k in table}
    return _checked(lambda: supervisor_spec(table["name"], _policy(table, where, source), hooks,
                                            children=children, **options), where, source)


def _tool(table: Any, where: str, source: str) -> dict[str, Any]:
    _table(table, where, source)
    where = _label(table, where)
    _only(table, TOOL_KEYS, where, source)
    for key in ("name", "actor"):
        if key not in table:
            raise ConfigError(f"{source}: {where}: missing {key!r}")
    options = {k: table[k] for k in TOOL_KEYS - {"name", "actor", "config"} if k in table}
    if "config" in table and not isinstance(table["config"], dict):
        raise ConfigError(f"{source}: {where}.config must be a table")
    return _checked(lambda: tool_spec(table["actor"], table["name"], table.get("config"),
                                      **options), where, source)


def _policy(table: dict[str, Any], where: str, source: str) -> Policy:
    kwargs = {k: table[k] for k in POLICY_KEYS if k in table}
    backoff = kwargs.get("backoff")
    if backoff is not None:
        _table(backoff, f"{where}.backoff", source)
        _only(backoff, BACKOFF_KEYS, f"{where}.backoff", source)
        kwargs["backoff"] = _checked(lambda: Backoff(**backoff), f"{where}.backoff", source)
    for key, cls in (("breaker", Breaker), ("retry", Retry)):
        value = kwargs.get(key)
        if value is not None:
            _table(value, f"{where}.{key}", source)
            _only(value, set(cls.__dataclass_fields__), f"{where}.{key}", source)
            kwargs[key] = _checked(lambda cls=cls, value=value: cls(**value), f"{where}.{key}",
                                   source)
    return _checked(lambda: Policy(**kwargs), where, source)


def _hook(path: Any, where: str, source: str) -> LifecycleHook:
    if not isinstance(path, str):
        raise ConfigError(f"{source}: {where}: give hooks as 'module:Class' strings")
    try:
        cls = load_object(path)
    except ImportError as exc:
        raise ConfigError(f"{source}: {where}: {exc}")
    if not (isinstance(cls, type) and issubclass(cls, LifecycleHook)):
        raise ConfigError(f"{source}: {where}: {path!r} is not a LifecycleHook subclass")
    return cls()


def _checked(build: Any, where: str, source: str) -> Any:
    try:
        return build()
    except (SpecError, TypeError) as exc:
        raise ConfigError(f"{source}: {where}: {exc}")


def _table(value: Any, where: str, source: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {where} must be a table")


def _label(table: dict[str, Any], where: str) -> str:
    name = table.get("name")
    return f"{where} ({name})" if isinstance(name, str) else where


def _only(table: dict[str, Any], allowed: set[str], where: str, source: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{source}: {prefix}{extra[0]}: unknown key; allowed here: "
                          f"{', '.join(sorted(allowed))}")
