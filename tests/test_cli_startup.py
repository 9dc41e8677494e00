"""The commands that only read (help, studies, best, strategies, models, bench replay --help) import no torch and no Ray.

Each runs as `rknas` does, in a fresh interpreter with only the built-in plugins (a plugin that
imports torch at its top is its author's choice). Speed is measured in benchmarks/, not here.
"""

import json
import os
import subprocess
import sys

import optuna
import pytest

from rknas.config import NetworkConfig, TrainConfig
from rknas.storage import StudyRecord, TrialRecord

PROBE = """
import json, sys
from rknas.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "ray", "matplotlib") if m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def study_url(tmp_path_factory):
    """A finished one-trial study as `rknas search` records it (no search run)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('startup') / 's.db'}"
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    for key, value in StudyRecord(space_name="digits_quick", metrics=["val_accuracy"], seed=0).user_attrs().items():
        study.set_user_attr(key, value)
    network = NetworkConfig(framework="cifar", strategy=["E"], stages=[1], k=[8], in_channels=1, image_size=8,
                            attention=False).model_dump(mode="json")
    record = TrialRecord(val_accuracy_per_epoch=[0.9], seed=0, params=1234, flops=5678, network=network,
                         training=TrainConfig(epochs=1).model_dump(mode="json"))
    study.add_trial(optuna.trial.create_trial(
        params={"lr": 0.1}, distributions={"lr": optuna.distributions.FloatDistribution(0.01, 1.0)}, value=0.9,
        user_attrs=record.user_attrs()))
    return url


@pytest.mark.parametrize("args", [
    ["--help"], ["search", "--help"], ["strategies"], ["models"], ["bench", "replay", "--help"], ["studies"],
    ["best", "--study", "tiny"],
], ids=lambda a: " ".join(a[:2]))
def test_a_command_that_only_reads_imports_no_torch_or_ray(args, study_url):
    env = {k: v for k, v in os.environ.items() if k != "RKNAS_PLUGIN_MODULES"}  # built-ins only
    if args[0] in ("studies", "best"):
        args = [*args, "--storage", study_url]
    run = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env={**env, "RKNAS_PLUGINS": ""})
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out == {"code": 0, "heavy": []}, (out, run.stderr[-2000:])


REPORT_PROBE = """
import atexit, gc, json, sys
atexit.register(lambda: print(json.dumps({  # registered first, so it runs last: after main's own exit
    "frozen": gc.get_freeze_count() > 0, "collecting": gc.isenabled(),
    "heavy": sorted(m for m in ("torch", "ray", "matplotlib", "sklearn") if m in sys.modules)})))
sys.argv = ["rknas", *sys.argv[1:]]
from rknas.cli import main
main()
"""


def test_the_command_line_skips_collecting_at_exit_and_a_caller_of_main_keeps_collecting(study_url, tmp_path, cli):
    """`rknas` freezes its objects as it exits (Python's shutdown then skips a collection that took
    a quarter second with Optuna and matplotlib loaded), and a read-only command does not collect
    cycles at all while it reads (another quarter second of a large report); ``main([...])`` in a
    caller's process (these tests, a notebook) must do neither, or that process would never
    collect them. The report draws in its drawer process (no matplotlib here) and computes
    importances in a worker (no scikit-learn here)."""
    import gc

    env = {k: v for k, v in os.environ.items() if k != "RKNAS_PLUGIN_MODULES"}
    run = subprocess.run([sys.executable, "-c", REPORT_PROBE, "report", "--study", "tiny", "--storage", study_url,
                          "-o", str(tmp_path / "r.png")], capture_output=True, text=True, env={**env, "RKNAS_PLUGINS": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"frozen": True, "collecting": False, "heavy": []}
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    before = gc.get_freeze_count()
    code, _, err = cli("report", "--study", "tiny", "--storage", study_url, "-o", tmp_path / "again.png")
    assert code == 0, err
    assert gc.get_freeze_count() == before and gc.isenabled()


def test_the_report_draws_both_pictures_in_its_drawer_process(study_url, tmp_path):
    """The study picture and the evaluation's picture are drawn in the process forked before
    matplotlib's import: the command's own process never imports it."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    optuna.copy_study(from_study_name="tiny", from_storage=study_url, to_storage=url)
    study = optuna.load_study(study_name="tiny", storage=url)
    summary = {"epochs": 1, "seeds": [0, 1], "recipe_trial": 0, "out": "runs/e", "models": [
        {"name": "trial_0", "source": "trial", "trial": 0, "params": 1234, "flops": 5678, "test_accuracy": [0.9, 0.92],
         "mean": 0.91, "std": 0.014, "architecture": "RKCNN-E-1"}]}
    study.set_user_attr("evaluations", [summary])
    env = {k: v for k, v in os.environ.items() if k != "RKNAS_PLUGIN_MODULES"}
    run = subprocess.run([sys.executable, "-c", REPORT_PROBE, "report", "--study", "tiny", "--storage", url,
                          "-o", str(tmp_path / "r.png")], capture_output=True, text=True, env={**env, "RKNAS_PLUGINS": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1])["heavy"] == []
    assert f"Wrote {tmp_path / 'r_evaluation.png'}" in run.stdout.replace("\n", "")
    for name in ("r.png", "r_evaluation.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_ctrl_c_while_the_command_line_loads_is_one_line_and_exit_130():
    """`rknas` loads its CLI for a quarter second before running it: a Ctrl-C there printed
    Python's traceback. The installed command is the entry point that says one line."""
    from importlib.metadata import entry_points

    assert entry_points(group="console_scripts")["rknas"].value == "rknas.__main__:main"
    probe = """
import sys
class Interrupted:  # Ctrl-C arriving while rknas.cli is imported
    def find_spec(self, name, path, target=None):
        if name == "rknas.cli":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupted())
from rknas.__main__ import main
main()
"""
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (run.returncode, run.stdout, run.stderr.strip()) == (130, "", "interrupted")
    run = subprocess.run([sys.executable, "-m", "rknas", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("rknas "), run.stderr[-2000:]
