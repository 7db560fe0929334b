"""The config's schema helpers, in a leaf module that config.py and the channels import.

config.py imported the channel types (to validate their tables) and the channels imported
config.py (for parse_address): a circle. What both need lives here, importing nothing of
the package: addresses; Checker, which reads a config file's values and reports each
problem at its line; and channel options, which a channel type declares once as a frozen
dataclass of option() fields (default, type, range and message of each key in one place)
and reads with parse_options().
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def tuple(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def ipv6(self) -> bool:
        return ":" in self.host


# -- locating keys in the source, for line numbers ---------------------------------
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def locate(text: str, repeats: list[int] | None = None) -> dict[str, int]:
    """Map dotted key paths (channel[0].udp.listen) to 1-based line numbers.

    Lines that define a key or table already seen are appended to repeats, if given."""
    lines: dict[str, int] = {}
    table = ""
    counts: dict[str, int] = {}
    for no, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            name = m.group(2).replace('"', "").replace("'", "")
            # Each part that names an array of tables takes its latest element's index:
            # [[channel.filter]] is channel[2].filter[3], [channel.filter.match] its match.
            parts = name.split(".")
            table = ""
            for i, part in enumerate(parts):
                table = f"{table}.{part}" if table else part
                if i == len(parts) - 1 and m.group(1) == "[[":
                    idx = counts.get(table, 0)
                    counts[table] = idx + 1
                    table = f"{table}[{idx}]"
                elif table in counts:
                    table = f"{table}[{counts[table] - 1}]"
            if repeats is not None and table in lines:
                repeats.append(no)
            lines.setdefault(table, no)
            continue
        m = _KEY.match(line)
        if m:
            key = m.group(1).strip("\"'")
            full = f"{table}.{key}" if table else key
            if repeats is not None and full in lines:
                repeats.append(no)
            lines.setdefault(full, no)
    return lines


class Checker:
    """Collects problems while reading values out of the parsed document."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.lines = locate(text)
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        """Record a problem with key, at the line of the key or of its nearest parent."""
        probe = key
        line = self.lines.get(probe)
        while line is None and "." in probe:
            probe = probe.rsplit(".", 1)[0]
            line = self.lines.get(probe)
        # A key missing at the top level has no line of its own: point at the file's start.
        where = f"{self.path}:{line or 1}"
        self.problems.append(f"{where}: {key}: {message}")

    # typed getters; on error they record a problem and return the default
    def get(self, table: dict, prefix: str, key: str, kind, default=None, required=False,
            check=None, expect: str = ""):
        full = f"{prefix}.{key}" if prefix else key
        if key not in table:
            if required:
                self.fail(full, "is required")
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not None and (not isinstance(value, kind) or
                                 (kind is int and isinstance(value, bool))):
            self.fail(full, f"must be {expect or _kind_name(kind)}, got {show(value)}")
            return default
        if check is not None and not check(value):
            self.fail(full, f"must be {expect}, got {show(value)}")
            return default
        return value

    def number(self, table: dict, prefix: str, key: str, kind, default, lo, hi, what: str,
               required=False):
        """get() of a number from lo to hi whose message ("{what} between {lo} and {hi}")
        is made from the bounds the check uses, so that the two cannot drift apart."""
        return self.get(table, prefix, key, kind, default, required, check=between(lo, hi),
                        expect=f"{what} between {lo} and {hi}")

    def address(self, table: dict, prefix: str, key: str, required=False, default=None,
                allow_zero_port=False) -> Address | None:
        raw = self.get(table, prefix, key, str, default, required, expect="\"host:port\"")
        if raw is None:
            return None
        try:
            return parse_address(raw, allow_zero_port)
        except ValueError as exc:
            self.fail(f"{prefix}.{key}" if prefix else key, str(exc))
            return None

    def unknown(self, table: dict, prefix: str, known: set[str]) -> None:
        for key, message in unknown_keys(table, known):
            self.fail(f"{prefix}.{key}" if prefix else key, message)


def _kind_name(kind) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a table", list: "a list"}.get(kind, str(kind))


def show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    return str(value)


def parse_address(raw: str, allow_zero_port: bool = False) -> Address:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", raw.strip())
    if not m:
        raise ValueError(f"must be \"host:port\" (IPv6 as \"[addr]:port\"), got {raw!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    low = 0 if allow_zero_port else 1
    if not low <= port <= 65535:
        raise ValueError(f"port must be {low}-65535, got {port}")
    if m.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    return Address(host, port)


def between(lo, hi):
    return lambda v: lo <= v <= hi




# -- channel options ---------------------------------------------------------------
# A channel's validate() returns (key, message) pairs; config.py puts them at the lines of
# channel[i].<type>.<key>. The messages are the ones the channels always gave (tests and
# docs quote them), which is why they are spelled out per option rather than derived.

Problems = list[tuple[str, str]]
T = TypeVar("T", bound="DataclassInstance")  # a channel's options dataclass


def unknown_keys(options: dict, known: set[str]) -> Problems:
    """A problem for each key of options not in known (config's tables and channels')."""
    return [(key, f"unknown key (known: {', '.join(sorted(known))})")
            for key in options if key not in known]


Configured = Mapping[str, Any]  # each option as the table gives it, else its default


class OptionProblems(ValueError):
    """Raised by an option's parse with more than one problem: (subkey, message) pairs,
    subkey "" for the option itself or a key inside it (properties.<name>)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def option(default: Any = MISSING, *, parse: Callable[[Any], Any] | None = None,
           parse_in: Callable[[Configured], Callable[[Any], Any]] | None = None,
           then: Callable[[Configured], Problems] | None = None,
           factory: Callable[[], Any] | None = None,
           required: str = "is required") -> Any:
    """One channel option, whole: its default (none: the key is required, with the message
    `required`; factory: a default made anew, for a mapping) and parse, which takes the
    configured value to the one held (its type and range checked) or raises ValueError
    with the problem's message (OptionProblems with several).

    parse_in instead of parse: an option whose range depends on others, made from the
    configured table (each option as given, else its default). then: the checks of this
    option against others, made from the same, which run after its parse whether the key
    is given or not; they report at any key, in the order of the option they follow."""
    if (parse is None) == (parse_in is None):
        raise TypeError("option() takes parse or parse_in")
    if parse is not None:
        fixed = parse
        parse_in = lambda _configured: fixed  # noqa: E731
    meta = {"parse_in": parse_in, "then": then, "required": required}
    return dataclasses.field(default=default, default_factory=factory or MISSING,
                             metadata=meta)


def checked(ok: Callable[[Any], bool], message: str | Callable[[Any], str],
            convert: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    """An option's parse: the value if ok(value) (converted), else ValueError(message),
    message a string or made from the value."""
    def parse(value):
        if not ok(value):
            raise ValueError(message(value) if callable(message) else message)
        return convert(value) if convert else value
    return parse


def is_int(value) -> bool:
    """An integer and not a bool (TOML's true is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def int_between(lo: int, hi: int) -> Callable[[Any], int]:
    return checked(lambda v: is_int(v) and lo <= v <= hi,
                   lambda v: f"must be an integer between {lo} and {hi}, got {v!r}")


boolean = checked(lambda v: isinstance(v, bool), "must be true or false")
string = checked(lambda v: isinstance(v, str), lambda v: f"must be a string, got {v!r}")


def one_of(choices: Iterable[str]) -> Callable[[Any], str]:
    """An option's parse for one of a few strings."""
    names = tuple(choices)
    return checked(lambda v: isinstance(v, str) and v in names,
                   lambda v: f"must be one of {', '.join(names)}, got {v!r}")


def address(allow_zero_port: bool = False) -> Callable[[Any], Address]:
    """An option's parse for "host:port" (IPv6 as "[addr]:port"): an Address."""
    def parse(value) -> Address:
        if not isinstance(value, str):
            raise ValueError(f"must be \"host:port\", got {value!r}")
        return parse_address(value, allow_zero_port)
    return parse


def _default(f: dataclasses.Field) -> Any:
    """A field's default, or MISSING for a required one."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def parse_options(cls: type[T], options: dict) -> tuple[T | None, Problems]:
    """The options of a channel table as cls (a dataclass of option() fields), and every
    problem: unknown keys first, then each option's (its parse's, then its then's) in the
    order cls declares them. None instead of cls when there is a problem."""
    fields = dataclasses.fields(cls)
    problems = unknown_keys(options, {f.name for f in fields})
    configured = {}
    for f in fields:
        value = options[f.name] if f.name in options else _default(f)
        if value is not MISSING:
            configured[f.name] = value
    values = {}
    for f in fields:
        meta = f.metadata
        if f.name in options:
            try:
                values[f.name] = meta["parse_in"](configured)(options[f.name])
            except OptionProblems as exc:
                problems.extend((f"{f.name}.{sub}" if sub else f.name, message)
                                for sub, message in exc.problems)
            except ValueError as exc:
                problems.append((f.name, str(exc)))
        elif f.default is MISSING and f.default_factory is MISSING:
            problems.append((f.name, meta["required"]))
        if meta["then"] is not None:
            problems.extend(meta["then"](configured))
    return (None if problems else cls(**values)), problems


def options_of(cls: type[T], options: dict) -> T:
    """As parse_options, for a channel opening its (validated) table: ValueError, naming
    every problem, if it is not valid after all."""
    value, problems = parse_options(cls, options)
    if value is None:
        raise ValueError("; ".join(f"{key}: {message}" for key, message in problems))
    return value
