"""The options of `run` and `params`, derived from `RunParams` by pydantic-settings' CLI source.

Every field of `RunParams` is a flag, nested ones dotted (`--train.replicas`,
`--gate.noise.coverage`, `--folder.max-skipped-fraction`), with the field's help text, default
and bounds; the short flags of nested fields (`--epochs`, `--train-size`, `--trainer`, ...) are
the `Shortcut`s declared on the fields in compare_models.config. A flag parses to text only:
pydantic validates the values once, when the preset and the flags given become a `RunParams`,
so a bad value fails with the field named (exit code 2).

pydantic-settings rather than cyclopts or typer: its `CliSettingsSource` adds the flags to the
argparse parsers the other commands already use (same exit codes, `--help` and reference page),
and returns only the flags given, as the nested mapping `preset_params` merges into a preset.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_settings import BaseSettings, CliSettingsSource, SettingsConfigDict

from compare_models.config import RunParams, Shortcut, preset_params

#: The preset a run starts from when `--preset` is not given.
DEFAULT_PRESET = "seed"


def shortcuts(model: type[BaseModel] = RunParams, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted flag, short flag) of every `Shortcut` declared on a field of `model`, e.g.
    ("train.batch-size", "batch-size")."""
    for name, field in model.model_fields.items():
        flag = f"{prefix}{name.replace('_', '-')}"
        for mark in field.metadata:
            if isinstance(mark, Shortcut):
                yield flag, mark.flag.removeprefix("--")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from shortcuts(field.annotation, f"{flag}.")


class _RunFlags(BaseSettings, RunParams):
    """`RunParams` as pydantic-settings' CLI source reads it (never instantiated)."""

    model_config = SettingsConfigDict(
        cli_kebab_case=True,
        cli_avoid_json=True,  # the nested models' own JSON flags stay out of the help
        cli_implicit_flags=True,
        cli_hide_none_type=True,  # `--run-id str`, not `--run-id {str,None}`
        cli_shortcuts=dict(shortcuts()),
        case_sensitive=True,
    )


class RunOptions:
    """The run's flags on one argparse parser, and the `RunParams` they give."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._source = CliSettingsSource(_RunFlags, root_parser=parser)
        # pydantic-settings drops a shortcut named like a nested model's JSON flag (`--split` for
        # `--split.protocol`): the shortcut takes that name over (the parser resolves conflicts,
        # so the hidden JSON flag loses it)
        assert parser.conflict_handler == "resolve", (
            "make the parser with conflict_handler='resolve'"
        )
        taken = parser._option_string_actions
        for dotted, short in shortcuts():
            target = taken[f"--{dotted}"]
            if taken.get(f"--{short}") is not target:
                parser.add_argument(
                    f"--{short}",
                    dest=target.dest,
                    default=argparse.SUPPRESS,
                    metavar=target.metavar,
                    help=f"short for --{dotted}",
                )

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """The flags given on the command line, as nested field values (text)."""
        self._source(parsed_args=args)
        return self._source()

    def params(self, args: argparse.Namespace) -> RunParams:
        """The run's parameters: the preset, changed by the flags given.

        As before the flags were derived: a local `--data` path is made absolute (workers may
        run elsewhere in the tree); split sizes without `--split` mean the `sizes` protocol; a
        new split protocol takes `--seed` for its seed too; and a folder of images is split by
        hash whatever the preset's split (sizes are for archives)."""
        from compare_models.data.folders import is_folder_source

        overrides = dict(self.given(args))
        preset = overrides.pop("preset", None) or DEFAULT_PRESET
        data = overrides.get("data")
        if data and Path(data).expanduser().exists():
            overrides["data"] = str(Path(data).expanduser().resolve())
        split = dict(overrides.get("split") or {})
        seed = (overrides.get("train") or {}).get("seed")
        if any(split.get(k) is not None for k in ("train", "val", "test")):
            split.setdefault("protocol", "sizes")
        if split.get("protocol") is None and data and is_folder_source(overrides["data"]):
            split["protocol"] = "hash"
        if split.get("protocol") is not None and seed is not None:
            split.setdefault("seed", seed)
        if split:
            overrides["split"] = split
        return preset_params(preset, **overrides)
