"""Every flag of every subcommand reaches the setting (or argument) it names.

And every settings field has a flag, with the field's docstring and default as its help.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from trackrelay.cli import flags, program
from trackrelay.config import settings as settings_module
from trackrelay.config.settings import (
    ControllerSettings,
    ForwarderSettings,
    OrderSettings,
    SimulatorSettings,
    StoreSettings,
)
from trackrelay.control.analytics_health import SIMULATOR_QUERIES, HealthQuery, PrometheusSpec

SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "orders": (OrderSettings,),
    "relay": (OrderSettings,),
    "migrate": (StoreSettings,),
    "up": (OrderSettings, ControllerSettings),
    "demo": (OrderSettings, ControllerSettings),
    "status": (StoreSettings,),
    "operator": (),
    "forwarder": (ForwarderSettings,),
    "analytics-sim": (SimulatorSettings,),
    "dlq": (StoreSettings,),
    "budget": (StoreSettings,),
}
TEXT = {
    "redis_url": "redis://example:6380/1",
    "database_url": "sqlite:///elsewhere.db",
    "analytics_url": "http://analytics.example:9000",
    "host": "0.0.0.0",
    "sim_host": "0.0.0.0",
    "consumer_name": "f-7",
    "live_configmap": "shop/trackrelay-live",
    "prometheus_url": "http://prometheus.example:9090",
    "prometheus_queries": "p99[,0.5]=histogram_quantile(0.99, x)",
}
NUMBERS = {
    "claim_idle": 40.0,
    "retry_ratio": 0.5,
    "budget_tolerance": 0.05,
    "sample_p": 0.5,
    "budget_initial": 100.0,
    "budget_max": 3000.0,
    "budget_decrease": 0.25,
    "budget_in_use": 0.75,
    "max_error_share": 0.1,
    "breaker_open_base": 1.0,
    "shed_sample_at": 0.3,
    "shed_aggregate_at": 0.5,
    "shed_evict_at": 0.95,
    "shed_hysteresis": 0.1,
    "shed_min_p": 0.5,
}
COMPANIONS = {
    "prometheus_queries": ["--prometheus-url", "http://prometheus.example:9090"],
    "prometheus_timeout": ["--prometheus-url", "http://prometheus.example:9090"],
    "prometheus_staleness": ["--prometheus-url", "http://prometheus.example:9090"],
}
"""Flags that a flag needs beside it to make a valid configuration."""
EVERY_FIELD: dict[str, type[BaseSettings]] = {
    "orders": OrderSettings,
    "forwarder": ForwarderSettings,
    "analytics-sim": SimulatorSettings,
    "up": ControllerSettings,
    "demo": ControllerSettings,
}
"""Commands that take every field of a settings class: together, every class's fields."""


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = program.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def flag_cases() -> list[tuple[str, argparse.Action]]:
    cases = []
    for name, sub in subcommands().items():
        for action in sub._actions:
            if action.option_strings and action.dest not in ("help",):
                cases.append((name, action))
    return cases


def test_every_subcommand_has_a_settings_class() -> None:
    assert set(subcommands()) == set(SETTINGS)


@pytest.mark.parametrize(("command", "action"), flag_cases(), ids=lambda v: getattr(v, "dest", v))
def test_flag_reaches_its_setting(
    command: str, action: argparse.Action, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in list(__import__("os").environ):
        if var.startswith("TRACKRELAY_"):
            monkeypatch.delenv(var)
    dest = action.dest
    argv: list[str] = [command]
    if command == "dlq":
        argv.append("list")
    if command == "budget":
        argv.append("show")
    flag = action.option_strings[-1]
    expected: Any
    if action.nargs == 0:  # store_const / store_true
        argv.append(flag)
        expected = action.const
    elif action.type is flags.parse_size:
        argv += [flag, "64KiB"]
        expected = 64 * 1024
    elif action.choices:
        expected = list(action.choices)[-1]
        argv += [flag, str(expected)]
    else:
        if action.type is int:
            expected = 3
        elif action.type is float:
            expected = NUMBERS.get(dest, 2.5)
        else:
            expected = TEXT.get(dest, f"/tmp/{dest}")
        argv += [flag, str(expected)]
    argv += COMPANIONS.get(dest, [])
    args = program.build_parser().parse_args(argv)
    if isinstance(action, argparse._AppendAction):
        expected = [expected]
    if dest in flags.NOT_SETTINGS:
        assert getattr(args, dest) == expected
        return
    owners = [cls for cls in SETTINGS[command] if dest in cls.model_fields]
    assert owners, f"{command} {flag}: no setting {dest!r} to reach"
    value = getattr(flags.settings_for(owners[-1], args), dest)
    if isinstance(value, Path):
        value = str(value)
    assert value == expected, f"{command} {flag}"


def test_command_arguments_reach_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    from trackrelay.local import runner, up
    from trackrelay.local.stack import StackOptions

    seen: dict[str, Any] = {}

    async def fake_up(options: StackOptions, load: float) -> int:
        seen.update(
            analytics_url=options.analytics_url,
            forwarders=options.forwarders,
            most=options.control.replicas_max,
            load=load,
        )
        return 0

    async def fake_relay(settings: OrderSettings, owner: str | None = None) -> int:
        seen["owner"] = owner
        return 0

    monkeypatch.setattr(up, "up", fake_up)
    monkeypatch.setattr(runner, "run_relay", fake_relay)
    argv = ["up", "--analytics-url", "http://a:1", "--forwarders", "6", "--load", "7"]
    assert program.main(argv) == 0
    assert program.main(["relay", "--owner", "relay-9"]) == 0
    assert seen == {
        "analytics_url": "http://a:1",
        "forwarders": 6,
        "most": 6,  # more at start than the default maximum raises the maximum
        "load": 7.0,
        "owner": "relay-9",
    }


def test_bad_configuration_is_one_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    code = program.main(["forwarder", "--push-timeout", "20", "--analytics-url", "http://a:1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "claim_idle (30s) must exceed push_timeout (20s)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (
            ["--prometheus-url", "http://p:9090", "--prometheus-query", "p99=up"],
            "prometheus_queries[0]: p99: needs a range, NAME[MIN,MAX]=PROMQL",
        ),
        (
            ["--prometheus-url", "http://p:9090", "--prometheus-query", "p99[1,0]=up"],
            "prometheus_queries[0]: p99: range: min 1 is above max 0",
        ),
        (["--prometheus-url", "prometheus:9090"], "must be an http:// or https:// URL"),
        (["--prometheus-timeout", "2"], "prometheus_timeout: given without prometheus_url"),
        (["--prometheus-query", "up[1,]=up"], "prometheus_queries: given without prometheus_url"),
        (
            ["--prometheus-url", "http://p:9090", "--prometheus-staleness", "0"],
            "prometheus_staleness: must be in (0, 3600]",
        ),
    ],
)
def test_bad_prometheus_flags_are_one_clear_message_and_exit_2(
    flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert program.main(["up", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_prometheus_flags_make_the_spec_the_controller_observes_with() -> None:
    def spec(*argv: str) -> PrometheusSpec | None:
        args = program.build_parser().parse_args(["up", *argv])
        return flags.settings_for(ControllerSettings, args).prometheus_spec()

    assert spec() is None
    assert spec("--prometheus-url", "http://p:9090") == PrometheusSpec("http://p:9090")
    assert PrometheusSpec("http://p:9090").queries == SIMULATOR_QUERIES
    p99 = 'histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="b"}[1m])))'
    given = spec(
        "--prometheus-url",
        "http://p:9090",
        "--prometheus-query",
        f"p99[,0.5]={p99}",
        "--prometheus-query",
        "up[1,]=min(up)",
        "--prometheus-timeout",
        "2.5",
        "--prometheus-staleness",
        "60",
    )
    queries = (HealthQuery("p99", p99, None, 0.5), HealthQuery("up", "min(up)", 1.0, None))
    assert given == PrometheusSpec("http://p:9090", queries, timeout=2.5, staleness=60.0)


def test_every_settings_field_has_a_flag() -> None:
    classes = [
        cls
        for cls in vars(settings_module).values()
        if isinstance(cls, type) and issubclass(cls, BaseSettings) and cls is not BaseSettings
    ]
    covered = {name for cls in EVERY_FIELD.values() for name in cls.model_fields}
    for cls in classes:
        missing = set(cls.model_fields) - covered
        assert not missing, f"{cls.__name__}: no command takes every field of it ({missing})"
    commands = subcommands()
    for command, cls in EVERY_FIELD.items():
        dests = {action.dest for action in commands[command]._actions}
        missing = set(cls.model_fields) - dests
        assert not missing, f"{command}: no flag for {sorted(missing)}"


@pytest.mark.parametrize(("command", "action"), flag_cases(), ids=lambda v: getattr(v, "dest", v))
def test_a_settings_flag_says_what_its_field_is_and_its_default(
    command: str, action: argparse.Action
) -> None:
    if action.dest in flags.NOT_SETTINGS:
        return
    (owner,) = {cls for cls in SETTINGS[command] if action.dest in cls.model_fields}
    field = owner.model_fields[action.dest]
    assert field.description, f"{owner.__name__}.{action.dest} has no docstring"
    summary = " ".join(field.description.split(". ")[0].replace("``", "").split())
    assert action.help is not None
    assert action.help.startswith(summary.removesuffix(".")), action.help
    assert "\n" not in action.help
    assert "(default: " in action.help, action.help


def test_a_retired_flag_or_variable_is_named_with_its_successor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert program.main(["forwarder", "--latency-target=0.5"]) == 2
    assert "--latency-target is now --push-latency-limit" in capsys.readouterr().err
    monkeypatch.setenv("TRACKRELAY_CONTROL_LATENCY_TARGET", "0.5")
    assert program.main(["status"]) == 2
    assert "TRACKRELAY_CONTROL_P99_TARGET" in capsys.readouterr().err
    assert program.retired_names(["up", "--p99-target", "0.5"], {}) == []
