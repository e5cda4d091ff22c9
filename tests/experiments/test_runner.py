import dataclasses
import json

import pytest
import yaml

from softprompt.errors import ConfigError
from softprompt.experiments import expand, load_experiment, run_experiment
from softprompt.experiments.config import command_line, config_fingerprint
from softprompt.experiments.runner import run_done


def _write(tmp_path, tiny_model_dirs, toy_data, **over):
    from conftest import write_toy_data

    write_toy_data(toy_data, "toy_transfer")
    spec = {
        "name": "tiny",
        "out": str(tmp_path / "results"),
        "defaults": {"model": str(tiny_model_dirs["causal"]), "data_dir": str(toy_data), "batch_size": 4,
                     "max_steps": 4, "eval_every": 2, "lr": 0.05, "optimizer": "adam", "zero_shot_baseline": False},
        "tasks": {"toy_transfer": {"template": "Review: {text}\nSentiment:",
                                   "label_words": "positive=positive;negative=negative"}},
        "methods": {"full-tuning": {"lr": 1e-3}},
        "grids": [
            {"name": "main", "tasks": ["rotten_tomatoes"], "methods": ["prompt-tuning", "manual", "full-tuning"],
             "prompt_length": [4], "init": ["class-labels"], "seeds": [0, 1]},
            {"name": "length", "tasks": ["rotten_tomatoes"], "methods": ["prompt-tuning"], "prompt_length": [2, 4],
             "init": ["class-labels"], "seeds": [0]},
        ],
        "ensembles": [{"grid": "main", "task": "rotten_tomatoes", "method": "prompt-tuning"}],
        "transfer": [{"grid": "main", "train": "rotten_tomatoes", "eval": ["toy_transfer"],
                      "methods": ["prompt-tuning", "full-tuning"]}],
        "inspect": {"grid": "main", "k": 3},
    }
    spec.update(over)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_expansion_collapses_axes_and_shares_runs(tmp_path, tiny_model_dirs, toy_data):
    exp = load_experiment(_write(tmp_path, tiny_model_dirs, toy_data))
    keys = [s.key for s in expand(exp)]
    assert keys == [
        "rotten_tomatoes/prompt-tuning/len4-class-labels/seed0", "rotten_tomatoes/prompt-tuning/len4-class-labels/seed1",
        "rotten_tomatoes/manual/seed0",  # the manual prompt draws nothing at random: one seed
        "rotten_tomatoes/full-tuning/seed0", "rotten_tomatoes/full-tuning/seed1",  # no prompt length axis
        "rotten_tomatoes/prompt-tuning/len2-class-labels/seed0",  # len4 seed0 is shared with 'main'
    ]
    shared = expand(exp)[0]
    assert shared.grids == ["main", "length"]
    full = expand(exp)[3].config
    assert full.lr == 1e-3 and full.optimizer == "adam" and full.progress is False
    cmd = command_line(full)
    assert cmd.startswith("softprompt train --task rotten_tomatoes") and "--method full-tuning" in cmd and "--lr 0.001" in cmd


def test_bad_experiment_files_are_named(tmp_path, tiny_model_dirs, toy_data):
    with pytest.raises(ConfigError, match="unknown key"):
        load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, grid=[]))
    with pytest.raises(ConfigError, match=r"defaults: unknown option\(s\) 'max_step' \(did you mean 'max_steps'\?\)"):
        load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, defaults={"max_step": 3}))
    with pytest.raises(ConfigError, match=r"grids\[0\] \(g\).options: unknown option\(s\) 'eval_evry' \(did you mean "
                                          r"'eval_every'\?\)"):
        load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, ensembles=[], transfer=[], inspect=None, grids=[
            {"name": "g", "tasks": ["rotten_tomatoes"], "methods": ["manual"], "options": {"eval_evry": 2}}]))
    with pytest.raises(ConfigError, match=r"grids\[0\]: unknown key\(s\) 'sed' \(did you mean 'seeds'\?\)"):
        load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, ensembles=[], transfer=[], inspect=None, grids=[
            {"name": "g", "tasks": ["rotten_tomatoes"], "methods": ["manual"], "sed": [1]}]))
    with pytest.raises(ConfigError, match=r"methods.manual: unknown option\(s\) 'promt_length' \(did you mean"):
        load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, methods={"manual": {"promt_length": 3}}))
    with pytest.raises(ConfigError, match="unknown method"):
        load_experiment(_write(tmp_path, tiny_model_dirs, toy_data,
                               grids=[{"name": "g", "tasks": ["rotten_tomatoes"], "methods": ["nope"]}]))
    for tasks in (["rotten_tomato"], ["rte,rotten_tomato"]):  # a typo is caught when the file is read, not hours in
        with pytest.raises(ConfigError, match=r"grid 'g': unknown task 'rotten_tomato' \(did you mean 'rotten_tomatoes'"):
            load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, ensembles=[], transfer=[], inspect=None,
                                   grids=[{"name": "g", "tasks": tasks, "methods": ["prompt-tuning"]}]))
    clash = [{"name": "a", "tasks": ["rotten_tomatoes"], "methods": ["manual"]},
             {"name": "b", "tasks": ["rotten_tomatoes"], "methods": ["manual"], "options": {"max_length": 64}}]
    with pytest.raises(ConfigError, match="different options"):
        load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, grids=clash, ensembles=[], transfer=[], inspect=None))


def test_grid_runs_analyses_report_and_skips_what_is_done(tmp_path, tiny_model_dirs, toy_data):
    path = _write(tmp_path, tiny_model_dirs, toy_data)
    summary = run_experiment(path, progress=False)
    assert summary["ran"] == 6 and summary["analysed"] == 1 + 1 + 4 + 2  # ensemble, zero-shot + 4 transfers, 2 inspects
    out = tmp_path / "results"
    exp = load_experiment(path)
    for spec in expand(exp):
        assert run_done(spec) is not None, spec.key
    ens = json.loads((out / "analyses/ensemble/rotten_tomatoes__prompt-tuning__len4-class-labels.json").read_text())
    assert set(ens["member_metrics"]) == {"seed0", "seed1"} and ens["n"] == 16
    # each member's vote, scored in the shared batch, agrees with that run's own final evaluation
    for seed in (0, 1):
        own = json.loads((out / f"runs/rotten_tomatoes/prompt-tuning/len4-class-labels/seed{seed}/results.json").read_text())
        assert ens["member_metrics"][f"seed{seed}"]["accuracy"] == pytest.approx(own["test"]["accuracy"])
    tr = json.loads((out / "analyses/transfer/rotten_tomatoes__full-tuning__seed0__toy_transfer.json").read_text())
    assert tr["method"] == "full-tuning" and tr["target_metrics"]["n"] == 16
    ins = json.loads((out / "analyses/inspect/rotten_tomatoes__prompt-tuning__len4-class-labels__seed0.json").read_text())
    assert len(ins["kept"]) == 2 and len(ins["neighbours"][0]["tokens"]) == 3
    report = (out / "report.md").read_text()
    for heading in ("## Grid `main`", "## Grid `length`", "## Prompt ensembles", "## Domain transfer",
                    "## Reading the prompts", "## Runs"):
        assert heading in report
    assert "softprompt train --task rotten_tomatoes" in report and " ± " in report
    for png in ("main.png", "length.png", "ensemble.png"):
        assert (out / png).stat().st_size > 1000

    # a rerun does nothing; a run whose results vanished after its checkpoint resumes; changed options redo
    assert run_experiment(path, progress=False)["ran"] == 0
    (out / "runs/rotten_tomatoes/manual/seed0/results.json").unlink()
    assert run_experiment(path, progress=False, report=False)["ran"] == 1
    data = yaml.safe_load(path.read_text())
    data["grids"][1]["prompt_length"] = [2, 3]
    path.write_text(yaml.safe_dump(data))
    assert run_experiment(path, progress=False, only=["length"])["ran"] == 1


def test_dry_run_lists_without_running(tmp_path, tiny_model_dirs, toy_data, capsys):
    summary = run_experiment(_write(tmp_path, tiny_model_dirs, toy_data), dry_run=True)
    assert summary["todo"] == 6 and not (tmp_path / "results" / "runs").exists()
    assert "run   rotten_tomatoes/manual/seed0" in capsys.readouterr().out


def test_tasks_filter_runs_only_those_tasks(tmp_path, tiny_model_dirs, toy_data, capsys):
    path = _write(tmp_path, tiny_model_dirs, toy_data)
    summary = run_experiment(path, tasks=["rotten_tomatoes"], dry_run=True)
    assert summary["todo"] == 6 and summary["analyses"] == 0  # analyses need every task's runs
    with pytest.raises(ConfigError, match=r"--tasks: no runs of \['boolq'\]"):
        run_experiment(path, tasks=["boolq"], dry_run=True)


def test_an_option_at_its_default_does_not_change_a_runs_fingerprint(tmp_path, tiny_model_dirs, toy_data):
    """A run stored before an option existed still counts as done (its config lacks the option)."""
    spec = expand(load_experiment(_write(tmp_path, tiny_model_dirs, toy_data)))[0]
    stored = dataclasses.asdict(spec.config)
    del stored["mixed_precision"]
    assert config_fingerprint(stored) == spec.fingerprint
    assert config_fingerprint({**stored, "mixed_precision": "bf16"}) != spec.fingerprint


def test_runs_go_seed_by_seed(tmp_path, tiny_model_dirs, toy_data, monkeypatch):
    """A stopped experiment has every column of its first seeds, not all seeds of a few columns."""
    import softprompt.experiments.runner as runner

    ran = []
    monkeypatch.setattr(runner, "run_one", lambda spec: ran.append(spec.key))
    run_experiment(_write(tmp_path, tiny_model_dirs, toy_data), only=["main"], report=False, progress=False)
    assert [k.rsplit("seed", 1)[1] for k in ran] == ["0", "0", "0", "1", "1"]
    assert ran[:3] == ["rotten_tomatoes/prompt-tuning/len4-class-labels/seed0", "rotten_tomatoes/manual/seed0",
                       "rotten_tomatoes/full-tuning/seed0"]


def test_each_run_is_logged_when_it_starts_and_finishes(tmp_path, tiny_model_dirs, toy_data, monkeypatch, caplog):
    """Without bars (--no-progress, a background job), -v still says which run is going: its place
    among all runs and analyses, its key, and its time."""
    import logging

    import softprompt.experiments.runner as runner

    monkeypatch.setattr(runner, "run_one", lambda spec: None)
    with caplog.at_level(logging.INFO, logger="softprompt.experiments.runner"):
        run_experiment(_write(tmp_path, tiny_model_dirs, toy_data), only=["main"], report=False, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "softprompt.experiments.runner"]
    assert lines[0] == "[1/5] rotten_tomatoes/prompt-tuning/len4-class-labels/seed0: started"
    assert lines[1].startswith("[1/5] rotten_tomatoes/prompt-tuning/len4-class-labels/seed0: finished in ")
    assert lines[-1].startswith("[5/5] rotten_tomatoes/full-tuning/seed1: finished in ") and len(lines) == 10


def test_a_multitask_grid_runs_and_reports_the_mean_over_its_tasks(tmp_path, tiny_model_dirs, toy_data):
    from conftest import write_boolq

    write_boolq(toy_data)
    spec = {"name": "mt", "out": str(tmp_path / "results"),
            "defaults": {"model": str(tiny_model_dirs["causal"]), "data_dir": str(toy_data), "batch_size": 4,
                         "max_steps": 2, "eval_every": 2, "lr": 0.01, "optimizer": "adam", "dev_from_train": 4,
                         "zero_shot_baseline": False},
            "grids": [{"name": "main", "tasks": ["rotten_tomatoes,boolq"], "methods": ["hyperformer"],
                       "options": {"method_options": "bottleneck=4,task_embedding_dim=6"}, "seeds": [0]}]}
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert run_experiment(path, progress=False)["ran"] == 1
    (run,) = expand(load_experiment(path))
    result = run_done(run)
    assert result["tasks"] == ["rotten_tomatoes", "boolq"] and set(result["test"]) >= {"mean", "rotten_tomatoes", "boolq"}
    report = (tmp_path / "results" / "report.md").read_text()
    assert f"| rotten_tomatoes,boolq | {result['test']['mean']:.3f} ± 0.000 (1) |" in report  # the mean over its tasks


def test_a_run_whose_lr_follows_the_model_counts_as_done(tmp_path, tiny_model_dirs, toy_data):
    """Prompt tuning's default lr is resolved only once the model is loaded (0.075 x its embedding
    RMS), so the results store a number where the grid has none: the run still counts as done,
    and is redone when the grid then names another lr."""
    path = _write(tmp_path, tiny_model_dirs, toy_data, ensembles=[], transfer=[], inspect=None,
                  grids=[{"name": "main", "tasks": ["rotten_tomatoes"], "methods": ["prompt-tuning"],
                          "prompt_length": [2], "init": ["class-labels"], "seeds": [0]}])
    data = yaml.safe_load(path.read_text())
    del data["defaults"]["lr"], data["defaults"]["optimizer"]
    path.write_text(yaml.safe_dump(data))
    spec = expand(load_experiment(path))[0]
    assert spec.config.lr is None
    assert run_experiment(path, progress=False, report=False)["ran"] == 1
    stored = json.loads((spec.out / "results.json").read_text())
    assert stored["config"]["lr"] == pytest.approx(float(f"{0.075 * stored['embedding_rms']:.2g}"))
    assert run_done(spec) is not None
    assert run_experiment(path, progress=False, report=False)["ran"] == 0
    data["defaults"]["lr"] = stored["config"]["lr"] * 3
    path.write_text(yaml.safe_dump(data))
    assert run_done(expand(load_experiment(path))[0]) is None
    # a results file from before embedding_rms was recorded cannot tell: redone
    del stored["embedding_rms"]
    (spec.out / "results.json").write_text(json.dumps(stored))
    assert run_done(spec) is None


def test_an_analysis_of_runs_that_were_redone_is_redone(tmp_path, tiny_model_dirs, toy_data, capsys):
    """An ensemble stored for the old prompts must not be reported beside new ones: once its
    member runs are redone with other options, the ensemble is planned again too."""
    path = _write(tmp_path, tiny_model_dirs, toy_data, transfer=[], inspect=None,
                  grids=[{"name": "main", "tasks": ["rotten_tomatoes"], "methods": ["prompt-tuning"],
                          "prompt_length": [2], "init": ["class-labels"], "seeds": [0, 1]}])
    assert run_experiment(path, progress=False, report=False)["analysed"] == 1
    stored = json.loads((tmp_path / "results/analyses/ensemble/rotten_tomatoes__prompt-tuning__len2-class-labels.json")
                        .read_text())
    assert set(stored["inputs"]["runs"]) == {"rotten_tomatoes/prompt-tuning/len2-class-labels/seed0",
                                             "rotten_tomatoes/prompt-tuning/len2-class-labels/seed1"}
    assert run_experiment(path, dry_run=True)["analyses_todo"] == 0
    data = yaml.safe_load(path.read_text())
    data["defaults"]["max_steps"] = 3  # same keys and folders, other prompts
    path.write_text(yaml.safe_dump(data))
    assert run_experiment(path, dry_run=True) == {"runs": 2, "todo": 2, "analyses": 1, "analyses_todo": 1}
    assert "run   ensemble: rotten_tomatoes__prompt-tuning__len2-class-labels" in capsys.readouterr().out
    summary = run_experiment(path, progress=False, report=False)
    assert summary["ran"] == 2 and summary["analysed"] == 1
    assert run_experiment(path, dry_run=True)["analyses_todo"] == 0


def test_a_redone_run_interrupted_midway_resumes_instead_of_starting_again(tmp_path, tiny_model_dirs, toy_data,
                                                                           monkeypatch):
    """A run redone with other options drops the old results.json as it starts, so a redo killed
    after its first checkpoint is resumed by the next `softprompt experiment`, not begun afresh
    (and the report never reads the old run's numbers as the new one's)."""
    from conftest import crash_at_call
    from softprompt.methods import PromptTuning
    import softprompt.training as training

    grid = {"name": "main", "tasks": ["rotten_tomatoes"], "methods": ["prompt-tuning"], "prompt_length": [2],
            "init": ["class-labels"], "seeds": [0]}
    path = _write(tmp_path, tiny_model_dirs, toy_data, ensembles=[], transfer=[], inspect=None, grids=[grid])
    assert run_experiment(path, progress=False, report=False)["ran"] == 1
    data = yaml.safe_load(path.read_text())
    data["defaults"].update(lr=0.02, max_steps=6, eval_every=3)
    path.write_text(yaml.safe_dump(data))
    spec = expand(load_experiment(path))[0]
    assert run_done(spec) is None  # other options: to redo
    restore = crash_at_call(monkeypatch, PromptTuning, 5)  # dies in step 5, after the step-3 checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_experiment(path, progress=False, report=False)
    restore()
    assert not (spec.out / "results.json").exists() and (spec.out / "checkpoint" / "state.json").exists()
    starts = []
    real = training._train
    monkeypatch.setattr(training, "_train", lambda cfg: starts.append(cfg.resume) or real(cfg))
    assert run_experiment(path, progress=False, report=False)["ran"] == 1
    assert starts == [True]  # resumed from step 3
    stored = json.loads((spec.out / "results.json").read_text())
    assert stored["config"]["lr"] == 0.02 and stored["steps"] == 6


def test_softprompt_experiment_stopped_by_a_signal_keeps_the_step_and_a_rerun_resumes(tmp_path, tiny_model_dirs,
                                                                                       toy_data):
    """SIGINT to `softprompt experiment`: the run in progress saves the step it is in and the
    command exits 130, saying a rerun resumes; the rerun continues that run from its checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    grid = {"name": "main", "tasks": ["rotten_tomatoes"], "methods": ["prompt-tuning"], "prompt_length": [2],
            "init": ["class-labels"], "seeds": [0]}
    path = _write(tmp_path, tiny_model_dirs, toy_data, ensembles=[], transfer=[], inspect=None, grids=[grid])
    data = yaml.safe_load(path.read_text())
    data["defaults"].update(max_steps=150, eval_every=1000, test_split="")
    path.write_text(yaml.safe_dump(data))
    spec = expand(load_experiment(path))[0]
    cmd = [sys.executable, "-m", "softprompt.cli", "experiment", str(path), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    log = spec.out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    step = json.loads((spec.out / "checkpoint" / "state.json").read_text())["state"]["step"]
    assert 3 <= step < 150 and f"SIGINT: stopped after step {step} of 150" in err
    assert "run the same command again: finished runs are kept and the interrupted one resumes" in err
    assert not (spec.out / "results.json").exists()

    again = subprocess.run([*cmd, "-v"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {spec.out / 'checkpoint'} at step {step}" in again.stderr  # continued, not begun again
    lines = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [ln["step"] for ln in lines if "loss" in ln] == list(range(1, 151))
    assert json.loads((spec.out / "results.json").read_text())["steps"] == 150
