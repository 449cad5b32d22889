"""Every flag of every subcommand reaches the setting (or argument) it names."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

import trackrelay.cli.commands as cli
from trackrelay.config.settings import (
    ControllerSettings,
    ForwarderSettings,
    OrderSettings,
    SimulatorSettings,
    StoreSettings,
)

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
}
NUMBERS = {
    "claim_idle": 40.0,
    "retry_ratio": 0.5,
    "budget_tolerance": 0.05,
    "sample_p": 0.5,
    "budget_initial": 100.0,
    "budget_max": 3000.0,
}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
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
    elif action.type is cli.parse_size:
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
    args = cli.build_parser().parse_args(argv)
    if isinstance(action, argparse._AppendAction):
        expected = [expected]
    if dest in cli.NOT_SETTINGS:
        assert getattr(args, dest) == expected
        return
    owners = [cls for cls in SETTINGS[command] if dest in cls.model_fields]
    assert owners, f"{command} {flag}: no setting {dest!r} to reach"
    value = getattr(cli.settings_for(owners[-1], args), dest)
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
    assert cli.main(argv) == 0
    assert cli.main(["relay", "--owner", "relay-9"]) == 0
    assert seen == {
        "analytics_url": "http://a:1",
        "forwarders": 6,
        "most": 6,  # more at start than the default maximum raises the maximum
        "load": 7.0,
        "owner": "relay-9",
    }


def test_bad_configuration_is_one_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["forwarder", "--push-timeout", "20", "--analytics-url", "http://a:1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "claim_idle (30s) must exceed push_timeout (20s)" in err
    assert "Traceback" not in err
