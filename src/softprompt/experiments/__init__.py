"""``softprompt experiment``: the paper's comparisons as one grid, stored run by run, with a report.

* :mod:`.config` reads the experiment YAML and expands it into runs;
* :mod:`.runner` trains/evaluates every run (skipping finished ones) and the analyses built on
  them: prompt ensembles, domain transfer, prompt interpretation;
* :mod:`.report` turns the stored results into ``report.md`` and PNG plots.
"""

from .config import Experiment, RunSpec, expand, load_experiment
from .report import write_report
from .runner import run_experiment

__all__ = ["Experiment", "RunSpec", "expand", "load_experiment", "run_experiment", "write_report"]
