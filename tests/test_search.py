"""The Optuna search's parts without training: the search space as Hydra's own Optuna sweeper reads it, values
written back so that Hydra reads them unchanged, a resumed study's sampler that replays nothing, and the trials a
killed search left running (pruned stays pruned, a trial asked but never launched is failed)."""
import json

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

pytest.importorskip("optuna")

import optuna  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from deepart.core import rundir  # noqa: E402
from deepart.training.pruning import RUN_ATTR, open_storage  # noqa: E402
from hydra_plugins.deepart_plugins._optuna import make_sampler, overrides_of, parse_space, recover  # noqa: E402


def test_the_search_space_reads_hydras_sweep_syntax_as_hydras_optuna_sweeper_does():
    params = {"phase": {"lr": "tag(log, interval(1e-5, 3e-3))", "batch_size": "tag(int, interval(8, 64))"},
              "loss.gamma": "interval(1, 4)", "model.dim": "range(64, 257, 64)", "seed": "range(3)",
              "sequencer": "choice(bilstm, gru)"}
    fixed, space = parse_space(params, ["trainer.threads=1", "data.image_size=128"])
    assert fixed == ["trainer.threads=1", "data.image_size=128"]
    assert space["phase.lr"] == FloatDistribution(1e-5, 3e-3, log=True)
    assert space["phase.batch_size"] == IntDistribution(8, 64)      # tagged int: integers only
    assert space["loss.gamma"] == FloatDistribution(1.0, 4.0)       # interval(1, 4) untagged: a float range
    assert space["model.dim"] == IntDistribution(64, 256, step=64)  # range: Python's, the end excluded
    assert space["seed"] == IntDistribution(0, 2)
    assert space["sequencer"] == CategoricalDistribution(["bilstm", "gru"])


def test_a_key_given_a_plain_value_on_the_command_line_leaves_the_search():
    fixed, space = parse_space({"loss.gamma": "interval(0, 4)", "sequencer": "choice(bilstm, gru)"},
                               ["loss.gamma=2", "sequencer=choice(gru,pool)"])
    assert fixed == ["loss.gamma=2"] and set(space) == {"sequencer"}
    assert space["sequencer"] == CategoricalDistribution(["gru", "pool"])  # the command line's range wins


def test_an_empty_range_is_one_line_naming_the_key():
    from deepart.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"hydra.sweeper.params.seed=range\(3, 3\): an empty range"):
        parse_space({"seed": "range(3, 3)"}, [])


@pytest.mark.parametrize("value", ["a b", "x,y", "it's", "1", "true", "null", "[1,2]", "k=v", "data/x.csv", "bilstm",
                                   1, 2.5, 1e-05, True, None])
def test_every_trial_value_reads_back_unchanged_through_hydras_grammar(value):
    _, space = parse_space({"key": "choice(a, b)"}, [])
    (line,) = overrides_of([], {"key": value}, space)
    assert OverridesParser.create().parse_override(line).value() == value


def ask_values(study, n: int) -> list[float]:
    values = []
    for _ in range(n):
        trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
        values.append(trial.params["x"])
        study.tell(trial.number, trial.params["x"])
    return values


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_a_resumed_search_seeds_its_sampler_anew_and_replays_no_values(tmp_path, name):
    cfg = {"name": name, "seed": 7, "n_startup_trials": 10}
    storage = open_storage(None, tmp_path)
    first = ask_values(optuna.create_study(study_name="s", storage=storage, sampler=make_sampler(cfg)), 3)
    again = ask_values(optuna.create_study(study_name="again", storage=open_storage(None, tmp_path / "b"),
                                           sampler=make_sampler(cfg)), 3)
    assert first == again  # the same seed, the same first trials: a search repeats
    study = optuna.load_study(study_name="s", storage=storage)
    study.sampler = make_sampler(cfg, trials_so_far=len(study.trials))  # what a resumed search does
    assert not set(ask_values(study, 3)) & set(first)


def test_the_trials_a_killed_search_left_running(tmp_path):
    """Run 0 finished and run 1 was pruned before the kill (their files say so), run 2 was mid-training, and one
    trial was asked but never given a run: told done, pruned, relaunched, failed."""
    study = optuna.create_study(study_name="s", storage=open_storage(None, tmp_path), direction="maximize")
    trials = [study.ask({"x": FloatDistribution(0.0, 1.0)}) for _ in range(4)]
    for run, trial in enumerate(trials[:3]):
        trial.set_user_attr(RUN_ATTR, run)
        (tmp_path / str(run)).mkdir()
    rundir.write_metrics(tmp_path / "0", {"best": {"val/mean_top1": 0.625}, "final": {}})
    rundir.write_pruned(tmp_path / "1", {"epoch": 1, "value": 0.25})
    again = recover(study, tmp_path)
    assert [t.number for t in again] == [2]
    states = {t.number: (t.state, t.value) for t in study.get_trials()}
    assert states == {0: (TrialState.COMPLETE, 0.625), 1: (TrialState.PRUNED, None), 2: (TrialState.RUNNING, None),
                      3: (TrialState.FAIL, None)}
    assert json.loads((tmp_path / "1" / rundir.PRUNED).read_text())["epoch"] == 1  # kept
