"""Command-line flags made from the settings fields they override, and read back.

A subcommand names the settings fields it takes (``add_settings``); each one
becomes a flag whose ``dest`` is the field's name, whose type is the field's and
whose help is the first sentence of the field's docstring with its default. The
flag's own default stays None, so ``settings_for`` hands the settings class only
the flags given and the class fills in the rest from ``TRACKRELAY_*`` or its
defaults: flags > environment > defaults, and a flag cannot be parsed and then
forgotten.

The rules: ``relay_batch_size`` is ``--relay-batch-size``; a bool field is a
switch to the value it does not have by default, ``--no-<name>`` when it is on by
default; a list field is a flag given once per item. ``SPELLINGS`` is the one
table of flags that read otherwise, and ``NOT_SETTINGS`` names the flags that
steer a command rather than set a field.
In the help, a docstring's ``None: ...`` sentence is the default of a field that
defaults to None, its ``Empty: ...`` that of a list, and its ``Off: ...`` (or
``On: ...``) what a switch does.

pydantic-settings' own CLI source does not fit: it spells a flag after its field
or alias, offers every field of a class, and reads the values itself, where these
commands keep their flag names (``--fixed``, ``--min-forwarders``), take a chosen
part of a class (``status`` only ``--data-dir``) and argparse's types (``64MiB``).
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from trackrelay.control import shedding
from trackrelay.control.shedding import MODES

S = TypeVar("S", bound=BaseSettings)


def parse_size(text: str) -> int:
    """A size flag (``64MiB``); a bad one is argparse's usage error with the reason."""
    try:
        return shedding.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Spelling:
    """How one settings field reads on the command line where the rules do not say."""

    flag: str | None = None
    """The option string; None: ``--field-name`` (``--no-field-name`` for a switch off)."""
    parse: Callable[[str], Any] | None = None
    """What turns the flag's text into the value; None: the field's type."""
    choices: Sequence[str] | None = None
    """The only texts accepted; None: any the type reads."""
    metavar: str | None = None
    """The value's name in the usage; None: argparse's (the field's name in capitals)."""


SPELLINGS: Mapping[str, Spelling] = {
    # Switches named for what they do rather than for the field they turn off.
    "run_relay": Spelling("--no-relay"),
    "migrate_on_start": Spelling("--no-migrate"),
    "enabled": Spelling("--no-control"),
    "adaptive": Spelling("--fixed"),
    "honor_retry_after": Spelling("--ignore-retry-after"),
    # The controller's fields in local mode's words.
    "replicas_min": Spelling("--min-forwarders"),
    "replicas_max": Spelling("--max-forwarders"),
    "budget_initial": Spelling("--budget"),
    "interval": Spelling("--control-interval"),
    "prometheus_queries": Spelling("--prometheus-query", metavar="NAME[MIN,MAX]=PROMQL"),
    # Values read other than by their type.
    "queue_quota": Spelling(parse=parse_size),
    "shedding": Spelling(choices=MODES),
}
"""Every flag that is not its field's plain spelling, by field name."""

DROPPED_PREFIX = "sim_"
"""The simulator's fields are ``TRACKRELAY_SIM_*``; its own command says ``--port``."""

NOT_SETTINGS = frozenset(
    {
        "owner",
        "forwarders",
        "load",
        "analytics_url_up",
        "action",
        "count",
        "value",
        "json",
        "duration",
        "scenario",
        "no_live",
        "report_dir",
        "namespace",
        "all_namespaces",
        "peering",
        "priority",
        "liveness",
        "allow_host",
    }
)
"""Flags that steer a command itself rather than a settings field."""


def settings_for(cls: type[S], args: argparse.Namespace) -> S:
    """``cls`` from the environment, overridden by every flag the user gave."""
    given = {
        name: value
        for name, value in vars(args).items()
        if name in cls.model_fields and value is not None
    }
    return cls(**given)


def own_fields(cls: type[BaseModel]) -> list[str]:
    """The fields ``cls`` declares itself, in order (not those it inherits)."""
    inherited: set[str] = set()
    for base in cls.__bases__:
        if issubclass(base, BaseModel):
            inherited.update(base.model_fields)
    return [name for name in cls.model_fields if name not in inherited]


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type[BaseSettings],
    fields: Iterable[str] | None = None,
    *,
    title: str | None = None,
    shown: Mapping[str, str] | None = None,
) -> None:
    """A flag for each of ``fields`` of ``cls`` (default: those ``cls`` declares itself).

    They form one group of the help, titled ``title`` or by the class's docstring.
    ``shown`` replaces the default the help shows, for a command that chooses its own.
    """
    group = parser.add_argument_group(title or _sentences(cls.__doc__ or cls.__name__)[0])
    for name in own_fields(cls) if fields is None else fields:
        _add_flag(group, name, cls.model_fields[name], (shown or {}).get(name))


def _flag_name(name: str, info: FieldInfo) -> str:
    """The option string of field ``name``."""
    spelling = SPELLINGS.get(name)
    if spelling is not None and spelling.flag is not None:
        return spelling.flag
    words = name.removeprefix(DROPPED_PREFIX).replace("_", "-")
    if _is_list(info):
        return f"--{words}"
    if _value_type(info) is bool and info.get_default(call_default_factory=True):
        return f"--no-{words}"
    return f"--{words}"


def _is_list(info: FieldInfo) -> bool:
    """A ``list[str]`` field: one flag per item (``action="append"``)."""
    if typing.get_origin(info.annotation) is not list:
        return False
    if typing.get_args(info.annotation) != (str,):
        raise TypeError(f"no flag for a setting of type {info.annotation!r}")
    return True


def _value_type(info: FieldInfo) -> type:
    """The field's type without ``None`` and constraints: bool, int, float, str or Path."""
    kind: Any = info.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        kind = options[0] if len(options) == 1 else kind
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if kind not in (bool, int, float, str, Path):
        raise TypeError(f"no flag for a setting of type {kind!r}")
    return typing.cast(type, kind)


def _add_flag(
    group: argparse._ArgumentGroup, name: str, info: FieldInfo, shown: str | None
) -> None:
    """Field ``name``'s flag: a switch for a bool, else a value of the field's type."""
    flag = _flag_name(name, info)
    default = info.get_default(call_default_factory=True)
    sentences = _sentences(info.description or "")
    if _is_list(info):
        shown = shown or _clause(sentences, "Empty") or "none"
        help_text = f"{sentences[0]} (default: {shown}; repeatable)"
        metavar = SPELLINGS.get(name, Spelling()).metavar
        group.add_argument(
            flag, dest=name, action="append", metavar=metavar, help=_escaped(help_text)
        )
        return
    kind = _value_type(info)
    if kind is bool:
        sets = not default
        clause = _clause(sentences, "On" if sets else "Off")
        then = f"{_on(sets)} with this flag" + (f": {clause}" if clause else "")
        help_text = f"{sentences[0]} (default: {_on(default)}; {then})"
        group.add_argument(
            flag, dest=name, action="store_const", const=sets, help=_escaped(help_text)
        )
        return
    if shown is None:
        shown = (_clause(sentences, "None") or "none") if default is None else _shown(default)
    spelling = SPELLINGS.get(name, Spelling())
    parse = spelling.parse or (kind if kind in (int, float) else None)
    read: dict[str, Any] = {} if parse is None else {"type": parse}  # text stays text
    group.add_argument(
        flag,
        dest=name,
        choices=spelling.choices,
        help=_escaped(f"{sentences[0]} (default: {shown})"),
        **read,
    )


_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z`])")


def _sentences(doc: str) -> list[str]:
    """A docstring's sentences as plain one-line text, without their full stops."""
    parts = _SENTENCE_END.split(doc.strip())
    return [" ".join(part.replace("``", "").split()).removesuffix(".") for part in parts]


def _clause(sentences: Sequence[str], word: str) -> str | None:
    """What the ``<word>: ...`` sentence says (``None: no limit`` -> ``no limit``)."""
    for sentence in sentences[1:]:
        if sentence.startswith(f"{word}:"):
            text = sentence[len(word) + 1 :].strip()
            return text[:1].lower() + text[1:] if text[1:2].islower() else text
    return None


def _on(value: object) -> str:
    return "on" if value else "off"


def _shown(default: object) -> str:
    return format(default, "g") if isinstance(default, float) else str(default)


def _escaped(text: str) -> str:
    return text.replace("%", "%%")
