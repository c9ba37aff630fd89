"""Read a TOML file into the same specs that code builds; check it all before starting.

Layout::

    [system]                      # optional: log_level, base, call_timeout, op_timeout,
                                  # and the root's policy keys (strategy, max_restarts, ...)
    [[supervisor]]                # name, strategy, max_restarts, period, backoff = {...},
                                  # fatal_errors, restart, shutdown_timeout, hooks = ["m:C"]
    [[supervisor.tool]]           # name, actor = "module:Class", restart, security_level,
                                  # config = {...}, shutdown_timeout, start_timeout, hold_limit,
                                  # limits = {...}, on_limit, adaptive, hard_memory, max_callers
    [[supervisor.supervisor]]     # nested supervisors, same keys; started after the tools
    [[role]]                      # name, permissions = ["RESOURCE:ACTION"], parents = [...]
    [[principal]]                 # name, roles = [...], token (optional)
    [[alert]]                     # name, metric, op, threshold, for, severity, tool (checked by
    [[alert_sink]]                # kind = "log" | "webhook", url       the host: monitoring)

Every problem is reported in one ``ConfigError`` naming the file and the key (or
the line, for TOML syntax errors), all of them in file order, with values spelled
as TOML spells them (``true``, ``"text"``, ``nan``); nothing is started until the
whole file is valid.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors import plugins
from actors.breaker import Breaker
from actors.loading import load_object
from actors.shell import BASES
from supervisors.tree.hooks import LifecycleHook
from supervisors.tree.policy import Backoff, Policy, Retry, SpecError
from supervisors.tree.pools import Autoscale, check_replicas, expand
from supervisors.tree.specs import supervisor_spec, tool_spec

POLICY_KEYS = {"strategy", "max_restarts", "period", "backoff", "fatal_errors", "auto_shutdown",
               "breaker", "transient", "retry"}
SYSTEM_KEYS = {"dashboard", "log_level", "base", "call_timeout", "op_timeout",
               "sample_every", "audit_log", "data_dir"} | POLICY_KEYS
SUPERVISOR_KEYS = POLICY_KEYS | {"name", "restart", "shutdown_timeout", "hooks", "tool",
                                 "supervisor", "significant"}
TOOL_KEYS = {"name", "actor", "restart", "security_level", "config", "shutdown_timeout",
             "start_timeout", "hold_limit", "limits", "on_limit", "adaptive", "hard_memory",
             "max_callers", "security", "hang_timeout", "significant", "replicas"}
BACKOFF_KEYS = {"initial", "maximum", "multiplier", "jitter", "reset_after"}


class ConfigError(SpecError):
    """The config file cannot be used; the message names the file and the key or line.

    ``problems`` lists every problem found, in file order.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


@dataclass
class Config:
    system_options: dict[str, Any] = field(default_factory=dict)
    supervisors: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)       # [[role]] tables, checked by the host
    principals: list[dict[str, Any]] = field(default_factory=list)  # [[principal]] tables
    dashboard: str | None = None                                     # [system] dashboard "HOST:PORT"
    alerts: list[dict[str, Any]] = field(default_factory=list)       # [[alert]] tables (monitoring)
    alert_sinks: list[dict[str, Any]] = field(default_factory=list)  # [[alert_sink]] tables


def toml_value(value: Any) -> str:
    """``value`` as it is written in TOML (``true``, ``"text"``, ``nan``, ``{ a = 1 }``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if value is None:
        return "(nothing)"
    return str(value)  # dates and times print as TOML writes them


class _Fault(Exception):
    """One problem, already worded; parsing goes on with the next table."""


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def note(self, text: str) -> None:
        self.problems.append(f"{self.source}: {text}")

    def fault(self, text: str) -> _Fault:
        self.note(text)
        return _Fault()

    def only(self, table: dict[str, Any], allowed: set[str], where: str) -> None:
        """Note every unknown key, in the order the file has them."""
        prefix = f"{where}." if where else ""
        for key in table:
            if key not in allowed:
                self.note(f"{prefix}{key}: unknown key; allowed here: {', '.join(sorted(allowed))}")

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fault(f"{where} must be a table")
        return value

    def checked(self, build: Any, where: str) -> Any:
        try:
            return build()
        except SpecError as exc:
            if exc.field is not None:
                raise self.fault(f"{where}: {exc.field} = {toml_value(exc.value)} is invalid: {exc.reason}")
            raise self.fault(f"{where}: {exc}")
        except TypeError as exc:
            raise self.fault(f"{where}: {exc}")


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
    r = _Reader(source)
    cfg = Config()
    r.only(data, {"system", "supervisor", "role", "principal", "alert", "alert_sink"}, "")
    for key in data:  # in file order
        try:
            if key == "system":
                cfg.system_options = _system(r, data["system"])
                cfg.dashboard = cfg.system_options.pop("dashboard", None)
            elif key == "supervisor":
                cfg.supervisors = _supervisors(r, data["supervisor"])
            elif key in ("role", "principal", "alert", "alert_sink"):  # checked by the host
                tables = data[key]
                if not isinstance(tables, list) or not all(isinstance(x, dict) for x in tables):
                    raise r.fault(f"'{key}' must be an array of tables ([[{key}]])")
                setattr(cfg, key + "s", tables)
        except _Fault:
            pass
    if r.problems:
        if len(r.problems) == 1:
            raise ConfigError(r.problems[0])
        raise ConfigError(f"{source}: {len(r.problems)} problems:\n  " + "\n  ".join(r.problems),
                          r.problems)
    return cfg


LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def _system(r: _Reader, system: Any) -> dict[str, Any]:
    system = r.table(system, "system")
    r.only(system, SYSTEM_KEYS, "system")
    options: dict[str, Any] = {}
    for key, value in system.items():
        if key in ("dashboard", "log_level", "base", "call_timeout", "op_timeout", "sample_every",
                   "audit_log", "data_dir"):
            try:
                options[key] = _system_value(r, key, value)
            except _Fault:
                pass
    if POLICY_KEYS & system.keys():
        options["policy"] = _policy(r, system, "system")
    return options


def _system_value(r: _Reader, key: str, value: Any) -> Any:
    shown = f"system.{key} = {toml_value(value)} is invalid"
    if key == "log_level" and not (isinstance(value, str) and value.upper() in LOG_LEVELS):
        raise r.fault(f"{shown}: use one of {', '.join(LOG_LEVELS)}")
    if key == "base" and value not in BASES:
        raise r.fault(f"{shown}: use one of {', '.join(BASES)}")
    if key == "dashboard" and not (isinstance(value, str) and _host_port(value)):
        raise r.fault(f"{shown}: give \"HOST:PORT\", e.g. \"127.0.0.1:8750\"")
    if key == "audit_log" and not (isinstance(value, str) and value.strip()):
        raise r.fault(f"{shown}: give a file path")
    if key in ("call_timeout", "op_timeout", "sample_every") and not (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0):
        raise r.fault(f"{shown}: must be a finite number > 0 (seconds)")
    if key == "data_dir" and not (isinstance(value, str) and value) and value is not False:
        raise r.fault(f"{shown}: give a directory path (or false for no context store)")
    return value


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host.strip("[]") and port.isdigit() and 0 <= int(port) <= 65535)


def _supervisors(r: _Reader, sups: Any) -> list[dict[str, Any]]:
    if not isinstance(sups, list):
        raise r.fault("'supervisor' must be an array of tables ([[supervisor]])")
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, sup in enumerate(sups):
        try:
            spec = _supervisor(r, sup, f"supervisor[{i}]")
        except _Fault:
            continue
        if spec["name"] in names:
            r.note(f"supervisor[{i}].name: {toml_value(spec['name'])} is used twice")
            continue
        names.add(spec["name"])
        out.append(spec)
    return out


def _supervisor(r: _Reader, table: Any, where: str) -> dict[str, Any]:
    table = r.table(table, where)
    where = _label(table, where)
    r.only(table, SUPERVISOR_KEYS, where)
    faults = len(r.problems)
    if "name" not in table:
        r.note(f"{where}: missing 'name'")
    policy = None
    try:
        policy = _policy(r, table, where)
    except _Fault:
        pass
    hooks = []
    for k, h in enumerate(table.get("hooks", [])):
        try:
            hooks.append(_hook(r, h, f"{where}.hooks[{k}]"))
        except _Fault:
            pass
    children: list[dict[str, Any]] = []
    for kind, build in (("tool", _tool), ("supervisor", _supervisor)):
        items = table.get(kind, [])
        if not isinstance(items, list):
            r.note(f"{where}.{kind} must be an array of tables")
            continue
        for j, item in enumerate(items):
            try:
                here = f"{where}.{kind}[{j}]"
                spec = build(r, item, here)
                children.extend(r.checked(lambda spec=spec: expand(spec), here))
            except _Fault:
                pass
    if len(r.problems) > faults:
        raise _Fault()
    options = {k: table[k] for k in ("restart", "shutdown_timeout", "significant") if k in table}
    return r.checked(lambda: supervisor_spec(table["name"], policy, hooks, children=children,
                                             **options), where)


def _tool(r: _Reader, table: Any, where: str) -> dict[str, Any]:
    table = r.table(table, where)
    where = _label(table, where)
    r.only(table, TOOL_KEYS, where)
    missing = [key for key in ("name", "actor") if key not in table]
    for key in missing:
        r.note(f"{where}: missing {key!r}")
    if missing:
        raise _Fault()
    options = {k: table[k] for k in TOOL_KEYS - {"name", "actor", "config", "replicas"} if k in table}
    if options.get("hang_timeout") is False:  # TOML has no null: false turns the watchdog off
        options["hang_timeout"] = None
    if "config" in table and not isinstance(table["config"], dict):
        raise r.fault(f"{where}.config must be a table")
    spec = r.checked(lambda: tool_spec(table["actor"], table["name"], table.get("config"),
                                       **options), where)
    if "replicas" in table:  # a pool: expanded into its instances by _supervisor
        rule = r.checked(lambda: check_replicas(table["replicas"]), where)
        spec["replicas"] = rule.to_dict() if isinstance(rule, Autoscale) else rule
    return spec


def _policy(r: _Reader, table: dict[str, Any], where: str) -> Policy:
    kwargs = {k: table[k] for k in POLICY_KEYS if k in table}
    backoff = kwargs.get("backoff")
    if backoff is not None:
        r.table(backoff, f"{where}.backoff")
        r.only(backoff, BACKOFF_KEYS, f"{where}.backoff")
        known = {k: v for k, v in backoff.items() if k in BACKOFF_KEYS}
        kwargs["backoff"] = r.checked(lambda: Backoff(**known), where)
    for key, cls in (("breaker", Breaker), ("retry", Retry)):
        value = kwargs.get(key)
        if value is not None:
            r.table(value, f"{where}.{key}")
            allowed = set(cls.__dataclass_fields__)
            r.only(value, allowed, f"{where}.{key}")
            known = {k: v for k, v in value.items() if k in allowed}
            kwargs[key] = r.checked(lambda cls=cls, known=known: cls(**known), f"{where}.{key}")
    return r.checked(lambda: Policy(**kwargs), where)


def _hook(r: _Reader, path: Any, where: str) -> LifecycleHook:
    if not isinstance(path, str):
        raise r.fault(f"{where}: give hooks as 'module:Class' strings")
    try:
        cls = load_object(plugins.resolve(plugins.GROUPS["hooks"], path))
    except ImportError as exc:
        raise r.fault(f"{where}: {exc}")
    if not (isinstance(cls, type) and issubclass(cls, LifecycleHook)):
        raise r.fault(f"{where}: {path!r} is not a LifecycleHook subclass")
    return cls()


def _label(table: dict[str, Any], where: str) -> str:
    name = table.get("name")
    return f"{where} ({name})" if isinstance(name, str) else where
