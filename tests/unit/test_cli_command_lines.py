"""Today's command lines (README, docs, Makefile, tests, benchmarks) still parse, to the same
parameters, now that the run's flags are derived from RunParams."""

from __future__ import annotations

import shlex

import pytest
from pydantic import BaseModel

from compare_models.cli import champions, runs, services, show
from compare_models.cli import main as cli
from compare_models.cli.run_options import shortcuts
from compare_models.config import RunParams, preset_params

# (command line, the parameters it gives, as `preset_params(preset, **overrides)`)
RUN_LINES = [
    ("run --preset smoke --data synthetic --resnet-weights none",
     ("smoke", {"data": "synthetic", "resnet_weights": "none"})),
    ("params --preset smoke --data synthetic --trainer deployment",
     ("smoke", {"data": "synthetic", "execution": {"trainer": "deployment"}})),
    ("params --preset demo --data X --resnet-weights none --trainer deployment",
     ("demo", {"data": "X", "resnet_weights": "none", "execution": {"trainer": "deployment"}})),
    ("params --preset smoke --data synthetic:2000 --trainer deployment",
     ("smoke", {"data": "synthetic:2000", "execution": {"trainer": "deployment"}})),
    ("run --data s3://team-data/images/ --models cnn --track team",
     ("seed", {"data": "s3://team-data/images/", "models": "cnn", "gate": {"track": "team"},
               "split": {"protocol": "hash"}})),
    ("run --preset smoke --data synthetic --models cnn --json",
     ("smoke", {"data": "synthetic", "models": "cnn"})),
    ("run --models resnet50,cnn", ("seed", {"models": "resnet50,cnn"})),
    ("run --preset smoke --data synthetic:600 --models cnn --split sizes --train-size 400 "
     "--val-size 100 --test-size 100 --epochs 5 --batch-size 32 --json",
     ("smoke", {"data": "synthetic:600", "models": "cnn", "train": {"epochs": 5, "batch_size": 32},
                "split": {"protocol": "sizes", "train": 400, "val": 100, "test": 100}})),
    ("run --preset smoke --data synthetic:300 --models cnn --split sizes --train-size 150 "
     "--val-size 30 --test-size 50 --epochs 2 --threads 1 --run-id same-id --json",
     ("smoke", {"data": "synthetic:300", "models": "cnn", "run_id": "same-id",
                "train": {"epochs": 2, "threads": 1},
                "split": {"protocol": "sizes", "train": 150, "val": 30, "test": 50}})),
    ("run --preset seed --data cifar10 --models cnn --resnet-weights none --epochs 10 --threads 0 --json",
     ("seed", {"models": "cnn", "resnet_weights": "none", "train": {"epochs": 10, "threads": 0}})),
    ("run --preset smoke --data cifar10 --resnet-weights none --schedule weighted --json",
     ("smoke", {"resnet_weights": "none", "execution": {"schedule": "weighted"}})),
    ("run --preset smoke --models cnn --epochs 5 --track team-local --seed 7 --time-budget-minutes 30 "
     "--retries 1 --retry-delay-seconds 2 --store-outage-minutes 3 --learning-rate 0.01 --optimizer sgd",
     ("smoke", {"models": "cnn", "gate": {"track": "team-local"},
                "train": {"epochs": 5, "seed": 7, "learning_rate": 0.01, "optimizer": "sgd"},
                "execution": {"time_budget_minutes": 30, "retries": 1, "retry_delay_seconds": 2,
                              "store_outage_minutes": 3}})),
    # a new split takes --seed for its seed too; sizes alone mean the `sizes` protocol
    ("params --train-size 2000 --val-size 500 --test-size 1000 --seed 3",
     ("seed", {"train": {"seed": 3},
               "split": {"protocol": "sizes", "train": 2000, "val": 500, "test": 1000, "seed": 3}})),
    ("params --split full --skip-if-unchanged --data-sha256 " + "A" * 64,
     ("seed", {"split": {"protocol": "full"}, "skip_if_unchanged": True, "data_sha256": "a" * 64})),
    # fields no flag reached before
    ("params --preset smoke --train.replicas 3 --gate.noise.coverage 0.9 --no-gate.noise.enabled "
     "--comparison.confidence 0.99 --folder.min-images-per-class 5 --folder.max-skipped-fraction 0.1",
     ("smoke", {"train": {"replicas": 3}, "gate": {"noise": {"coverage": 0.9, "enabled": False}},
                "comparison": {"confidence": 0.99},
                "folder": {"min_images_per_class": 5, "max_skipped_fraction": 0.1}})),
]  # fmt: skip


def parse(line: str):
    return cli.build_parser().parse_args(shlex.split(line))


@pytest.mark.parametrize(("line", "expected"), RUN_LINES, ids=[line for line, _ in RUN_LINES])
def test_todays_run_command_lines_give_the_same_parameters(line: str, expected) -> None:
    args = parse(line)
    assert args.func is {"run": runs.cmd_run, "params": runs.cmd_params}[line.split()[0]]
    preset, overrides = expected
    assert args.options.params(args) == preset_params(preset, **overrides)
    if args.func is runs.cmd_run:
        assert args.json is line.endswith("--json")


def test_a_local_data_path_is_made_absolute(tmp_path, monkeypatch) -> None:
    (tmp_path / "images" / "cat").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    args = parse("run --data ./images/ --models cnn --epochs 5 --track team-local")
    params = args.options.params(args)
    assert params.data == str(tmp_path / "images")
    assert params.split.protocol == "hash" and params.train.epochs == 5


@pytest.mark.parametrize(
    ("line", "values"),
    [
        ("promote 20250101-x --model cnn --reason 'better on the new data'",
         {"func": champions.cmd_promote, "run_id": "20250101-x", "model": "cnn",
          "reason": "better on the new data", "track": None}),
        ("promote r1 --model resnet50 --reason why --track nightly",
         {"run_id": "r1", "model": "resnet50", "track": "nightly"}),
        ("champion cnn --track main --last 2 --json",
         {"func": champions.cmd_champion, "model": "cnn", "track": "main", "last": 2, "json": True}),
        ("champion", {"model": None, "track": None, "last": 5, "json": False}),
        ("history --model cnn --track smoke --last 3 --json",
         {"func": show.cmd_history, "model": "cnn", "track": "smoke", "last": 3, "json": True}),
        ("show", {"func": show.cmd_show, "run_id": None, "json": False}),
        ("show r1 --json", {"run_id": "r1", "json": True}),
        ("replay r1 --run-id r2 --trainer deployment --json",
         {"func": runs.cmd_replay, "run_id": "r1", "new_run_id": "r2", "trainer": "deployment",
          "json": True}),
        ("runs --json", {"func": show.cmd_runs, "json": True}),
        ("status --json", {"func": services.cmd_status, "json": True}),
        ("up --workers --database postgres --auth",
         {"func": services.cmd_up, "workers": True, "database": "postgres", "auth": True}),
        ("down", {"func": services.cmd_down}),
        ("deploy", {"func": services.cmd_deploy}),
    ],
)  # fmt: skip
def test_todays_other_command_lines_parse(line: str, values: dict) -> None:
    args = parse(line)
    assert {k: getattr(args, k) for k in values} == values


@pytest.mark.parametrize(
    "line",
    ["run --trainer nowhere", "params --preset nope", "run --epochs 0", "run --batch-size -1",
     "run --models cnn,vgg", "params --train.replicas 17", "params --gate.noise.coverage 1"],
)  # fmt: skip
def test_bad_parameters_exit_with_2(line: str, capsys) -> None:
    assert cli.main(shlex.split(line)) == 2
    assert "invalid parameters" in capsys.readouterr().err


def _dotted(model=RunParams, prefix=""):
    """Every field of RunParams by its dotted path (nested models too), e.g. "train.epochs"."""
    for name, field in model.model_fields.items():
        yield prefix + name
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from _dotted(sub, f"{prefix}{name}.")


def test_every_field_has_a_flag_and_every_shortcut_one_field() -> None:
    flags = parse("run").options._source.root_parser._option_string_actions
    for path in _dotted():
        assert "--" + path.replace("_", "-") in flags, path
    for target, short in shortcuts():
        assert flags[f"--{short}"].dest == flags[f"--{target}"].dest, short
    assert len({short for _, short in shortcuts()}) == len(list(shortcuts()))


@pytest.mark.parametrize("command", ["run", "params"])
def test_no_flag_of_run_or_params_is_written_by_hand(command: str) -> None:
    """Every option of `run` and `params` but --help (and run's --json) is a RunParams field's."""
    parser = parse(command).options._source.root_parser
    fields = set(_dotted())
    by_hand = [
        a.option_strings
        for a in parser._actions
        if a.dest not in fields and a.dest not in ("help", "json")
    ]
    assert by_hand == []
