"""Checkpointing: exact resumption after an interruption or a kill; refusing bad checkpoints."""

import json
import signal

import jax
import pytest
from train_testing import assert_trees_equal
from train_testing import cli_overrides
from train_testing import final_state
from train_testing import rows_without_time
from train_testing import run_python
from train_testing import small_config

from train import checkpoints
from train import metrics
from train.train import train_and_evaluate


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


def _resumable_config(**overrides):
    # 192 examples in batches of 64: the checkpoint at step 4 sits in the middle of epoch 1, so
    # resuming needs the saved data position and the per-epoch shuffle.
    settings = dict(
        num_steps=8,
        eval_every_steps=2,
        checkpoint_every_steps=4,
        dataset__train_size=192,
        dataset__batch_size=64,
    )
    settings.update(overrides)
    return small_config(**settings)


def _snapshot(directory):
    return {
        path.relative_to(directory): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """An 8-step mini-batch run that nothing interrupted: the reference for resumed runs."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    final = train_and_evaluate(_resumable_config(), workdir)
    return workdir, final


def test_interrupted_run_resumes_exactly(tmp_path, uninterrupted):
    reference_dir, reference_final = uninterrupted
    train_and_evaluate(_resumable_config(num_steps=4), tmp_path)
    final = train_and_evaluate(_resumable_config(), tmp_path)
    assert rows_without_time(tmp_path) == rows_without_time(reference_dir)
    assert {k: v for k, v in final.items() if k != "wall_time_s"} == {
        k: v for k, v in reference_final.items() if k != "wall_time_s"
    }
    assert_trees_equal(final_state(tmp_path), final_state(reference_dir))


_KILL_AT_STEP_6 = """
import os, signal, sys
from absl import app
import train.__main__ as cli
from train import checkpoints, metrics

write, save = metrics.MetricsWriter.write, checkpoints.Checkpointer.save

def write_then_die(self, row):
    write(self, row)
    if row["step"] == 6:
        os.kill(os.getpid(), signal.SIGKILL)

def save_and_wait(self, *args, **kwargs):
    save(self, *args, **kwargs)
    self.wait_until_finished()

metrics.MetricsWriter.write = write_then_die
checkpoints.Checkpointer.save = save_and_wait
sys.argv = ["train"] + {argv!r}
app.run(cli.main)
"""


def test_killed_command_resumes_exactly(tmp_path, uninterrupted):
    reference_dir, _ = uninterrupted
    argv = [
        "--config=configs/default.py",
        f"--workdir={tmp_path}",
        *cli_overrides(_resumable_config()),
    ]
    run_python(_KILL_AT_STEP_6.format(argv=argv), returncode=-signal.SIGKILL)
    assert [row["step"] for row in metrics.read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert checkpoints.Checkpointer(tmp_path).latest_step() == 4

    final = train_and_evaluate(_resumable_config(), tmp_path)
    assert final["step"] == 8
    assert rows_without_time(tmp_path) == rows_without_time(reference_dir)
    assert_trees_equal(final_state(tmp_path), final_state(reference_dir))


def test_finished_run_is_not_trained_again(uninterrupted):
    reference_dir, reference_final = uninterrupted
    before = _snapshot(reference_dir / "checkpoints")
    assert train_and_evaluate(_resumable_config(), reference_dir) == reference_final
    assert _snapshot(reference_dir / "checkpoints") == before


@pytest.fixture
def finished_run(tmp_path):
    workdir = tmp_path / "run"
    train_and_evaluate(small_config(num_steps=3, checkpoint_every_steps=3), workdir)
    return workdir


def _corrupt_arrays(workdir):
    # Orbax's OCDBT format keeps the array bytes in files under directories named "d".
    state = workdir / "checkpoints" / "3" / "state"
    array_files = [path for path in state.rglob("*") if path.parent.name == "d"]
    assert array_files
    for path in array_files:
        path.write_bytes(b"\0garbage" * 8)


def _corrupt_meta(workdir):
    (workdir / "checkpoints" / "3" / "meta" / "metadata").write_text("{not json")


# After the first unreadable array, orbax's remaining asyncio reads fail after their event loop
# has closed; that noise is orbax's and comes after the error this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("corrupt", [_corrupt_arrays, _corrupt_meta])
def test_corrupt_checkpoint_fails_clearly_and_keeps_the_files(finished_run, corrupt):
    corrupt(finished_run)
    before = _snapshot(finished_run)
    with pytest.raises(checkpoints.CheckpointError, match="cannot be restored"):
        train_and_evaluate(small_config(num_steps=6, checkpoint_every_steps=3), finished_run)
    assert _snapshot(finished_run) == before


def test_checkpoint_of_another_config_is_refused(finished_run):
    before = _snapshot(finished_run)
    config = small_config(num_steps=6, checkpoint_every_steps=3, model__hidden_sizes=(32,))
    with pytest.raises(checkpoints.CheckpointError, match=r"model\.hidden_sizes: \[16\]"):
        train_and_evaluate(config, finished_run)
    assert _snapshot(finished_run) == before


def test_checkpoint_past_num_steps_is_refused(finished_run):
    with pytest.raises(checkpoints.CheckpointError, match="past config.num_steps=2"):
        train_and_evaluate(small_config(num_steps=2, checkpoint_every_steps=1), finished_run)


def test_config_differences_ignore_run_length_and_reporting():
    saved = json.loads(small_config().to_json_best_effort())
    longer = small_config(num_steps=100, eval_every_steps=7, progress_bar=True)
    assert checkpoints.config_differences(saved, json.loads(longer.to_json_best_effort())) == []
    other = small_config(optimizer__learning_rate=0.5)
    differences = checkpoints.config_differences(saved, json.loads(other.to_json_best_effort()))
    assert differences == ["optimizer.learning_rate: 0.01 in the checkpoint, 0.5 now"]
