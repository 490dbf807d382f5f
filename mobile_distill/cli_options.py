"""Click options generated from a settings dataclass (``TrainConfig``, ``ExportConfig``, ``Thresholds``,
``BenchConfig``): one ``--flag`` per field, so a default and its help text live in the dataclass only.

A field's ``metadata`` may set ``flag`` (default ``--field-name``), ``help``, ``choices``, ``path``,
``multiple`` (also implied by a ``Tuple`` type), ``int_list`` (``--threads 1,2``), or ``cli: False``
for a field the command line does not set.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Callable, Iterable, Optional

import click


def field_default(f: Field):
    return f.default_factory() if f.default is MISSING else f.default


def _int_list(ctx, param, value):
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    try:
        return tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 1,2") from None


def _option(f: Field, keep_unset: bool) -> Callable:
    meta, kind = f.metadata, str(f.type).replace("Optional[", "").rstrip("]")
    flag = meta.get("flag", "--" + f.name.replace("_", "-"))
    default = None if keep_unset else field_default(f)
    help_text = meta.get("help", "")
    if keep_unset:  # the default comes from the config file when one is given: show the built-in one
        help_text += f" [default: {field_default(f)}]"
    kwargs = dict(default=default, help=help_text, show_default=not keep_unset)
    if meta.get("int_list"):
        kwargs.update(default=None if keep_unset else ",".join(map(str, default)), callback=_int_list)
    elif kind.startswith("Tuple") or meta.get("multiple"):
        kwargs.update(multiple=True, default=default or ())
    elif kind == "bool" and default is False:  # an opt-in: one flag, as --keep-failed
        return click.option(flag, f.name, is_flag=True, default=False, help=help_text)
    elif kind == "bool":
        return click.option(f"{flag}/--no-{flag[2:]}", f.name, **kwargs)
    elif "choices" in meta:
        kwargs["type"] = click.Choice(meta["choices"])
    elif meta.get("path"):
        kwargs["type"] = click.Path(path_type=Path)
    else:
        kwargs["type"] = {"int": int, "float": float, "str": str}[kind]
    return click.option(flag, f.name, **kwargs)


def dataclass_options(cls, only: Optional[Iterable[str]] = None, keep_unset: bool = False) -> Callable:
    """A decorator adding an option per field of ``cls`` (``only`` those named); the command receives
    each as a keyword named like the field. ``keep_unset``: every default is None, so a config file's
    value stands unless the flag is given (``mdistill train --config``)."""
    chosen = [f for f in fields(cls) if f.metadata.get("cli", True) and (only is None or f.name in only)]

    def decorate(fn):
        for f in reversed(chosen):
            fn = _option(f, keep_unset)(fn)
        return fn

    return decorate


def pop_fields(cls, values: dict) -> dict:
    """The keyword arguments of a command that are fields of ``cls``, removed from ``values``."""
    names = {f.name for f in fields(cls)}
    return {k: values.pop(k) for k in list(values) if k in names}
