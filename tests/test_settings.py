"""``ExportConfig``, ``Thresholds`` and ``BenchConfig`` hold every default of ``export()``, the parity
gate and ``bench()``; the CLI flags are generated from their fields, so a flag's default is the field's."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import click
import pytest

from mobile_distill.bench import BenchConfig, BenchError, bench
from mobile_distill.cli import bench_cmd, train_cmd
from mobile_distill.cli_export import export_cmd, verify_cmd
from mobile_distill.cli_options import dataclass_options, field_default
from mobile_distill.config import TrainConfig
from mobile_distill.export import ExportConfig, ExportError, Thresholds, export


def parsed(command: click.Command, *args) -> dict:
    """The values a command's options take when only ``args`` are given (defaults and callbacks applied)."""
    with command.make_context(command.name, list(args)) as ctx:
        return dict(ctx.params)


def flag_of(command: click.Command, name: str) -> click.Option:
    return next(p for p in command.params if p.name == name)


@pytest.mark.parametrize("command", [export_cmd, verify_cmd], ids=["export", "verify"])
def test_every_gate_threshold_flag_defaults_to_its_field(command):
    values = parsed(command, "x.pt")
    gated = [f for f in fields(Thresholds) if f.metadata.get("cli", True)]
    assert len(gated) == 7  # every threshold but the degenerate-model line has a flag
    for f in gated:
        assert values[f.name] == f.default, f.name
        assert flag_of(command, f.name).help == f.metadata["help"]
    assert Thresholds(**{f.name: values[f.name] for f in gated}) == Thresholds()
    assert "--min-cos-fp32" in flag_of(command, "float32_cos_min").opts


def test_export_flags_build_the_default_export_config():
    values = parsed(export_cmd, "x.pt")
    settable = [f for f in fields(ExportConfig) if f.metadata.get("cli", True)]
    assert {f.name for f in settable} <= set(values)
    assert ExportConfig(**{f.name: values[f.name] for f in settable}) == ExportConfig()
    given = parsed(export_cmd, "x.pt", "--precision", "tflite:int8", "--format", "tflite", "--keep-failed",
                   "--no-mixed-precision", "--min-int8-agreement", "0.8")
    config = ExportConfig(**{f.name: given[f.name] for f in settable})
    assert config.precisions == {"tflite": ["int8"]} and config.formats == ("tflite",)
    assert config.keep_failed and not config.mixed_precision and given["int8_top1_agreement"] == 0.8


def test_bench_flags_build_the_default_bench_config():
    values = parsed(bench_cmd, "export/")
    settable = [f for f in fields(BenchConfig) if f.metadata.get("cli", True)]
    assert BenchConfig(**{f.name: values[f.name] for f in settable}) == BenchConfig()
    assert parsed(bench_cmd, "export/", "--threads", "1,2")["threads"] == (1, 2)


def test_train_flags_leave_the_config_file_in_charge():
    """mdistill train's flags are generated the same way, but default to None (the recipe's value stands)."""
    values = parsed(train_cmd)
    settable = [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]  # not the ones runs set themselves
    assert all(values[f.name] in (None, ()) for f in settable)
    for f in settable:  # the built-in default, shown in --help, is the field's
        assert flag_of(train_cmd, f.name).help.endswith(f"[default: {field_default(f)}]"), f.name


def test_a_changed_field_default_changes_the_flag():
    """The check above can fail: a flag's default is read from the field, not written next to it."""
    @dataclass(frozen=True)
    class Settings:
        runs: int = field(default=7, metadata={"help": "timed runs"})
        name: str = field(default="a", metadata={"flag": "--label", "choices": ("a", "b"), "help": "which"})
        secret: int = field(default=1, metadata={"cli": False})

    @click.command()
    @dataclass_options(Settings)
    def cmd(**kw):
        pass

    assert parsed(cmd) == {"runs": 7, "name": "a"}
    assert parsed(cmd, "--label", "b", "--runs", "3") == {"runs": 3, "name": "b"}
    with pytest.raises(click.BadParameter):
        parsed(cmd, "--label", "c")


def test_an_unknown_setting_is_one_line_naming_the_valid_ones(tmp_path):
    with pytest.raises(ExportError, match=r"export\(\) has no setting parity_sample; settings: .*parity_samples"):
        export("x.pt", parity_sample=0)
    with pytest.raises(BenchError, match=r"bench\(\) has no setting thread; settings: .*threads"):
        bench(tmp_path, thread=[1])
    with pytest.raises(ExportError, match="--precision 'int8': use FORMAT:PRECISION"):
        ExportConfig(precisions=["int8"])
