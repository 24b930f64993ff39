"""``--device``: where the learner runs. Everything here runs on the CPU; the tests marked ``cuda``
run where torch sees a GPU (the accelerator machine's script) and skip elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mario_apo.checkpoint import load_checkpoint
from mario_apo.device import resolve_device
from mario_apo.errors import UsageError
from mario_apo.evaluate import policy_from_checkpoint
from mario_apo.runs import RunFiles, create_run
from mario_apo.train import train
from models.actor_critic import act, make_model

from conftest import TRAIN, assert_one_line_error, run_train, tiny_run_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def test_device_forms_resolve_or_name_what_is_valid():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for spec in ("gpu", "cuda:", "cuda:x", "CPU", ""):
        with pytest.raises(UsageError, match="valid are auto"):
            resolve_device(spec)
    with pytest.raises(UsageError, match="GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")  # one past the last (or any, without a GPU)


@pytest.mark.parametrize(
    ("device", "valid"), [("tpu", "valid are auto"), pytest.param("cuda", "sees no CUDA GPU", marks=no_cuda)]
)
def test_a_device_this_machine_lacks_is_one_line_exit_2_and_nothing_written(tmp_path, device, valid):
    done = run_train(tmp_path, f"--task cartpole --total-steps 256 --device {device} --name r")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, valid)
    assert not (tmp_path / "r").exists()


def test_eval_and_bench_refuse_a_missing_device_in_one_line(tmp_path):
    for argv in (["eval", str(tmp_path), "--device", "cuda:7"], ["bench", "train", "--device", "npu"]):
        done = subprocess.run([sys.executable, "-m", "mario_apo.cli", *argv], capture_output=True, text=True)
        assert done.returncode == 2
        assert_one_line_error(done.stderr, "GPU" if "cuda" in argv[-1] else "valid are auto")


def test_config_json_records_the_device_and_its_name(tmp_path):
    cfg = tiny_run_config(tmp_path, task="cartpole", total_steps=256, device="cpu")
    record = json.loads((create_run(cfg) / "config.json").read_text())
    assert record["device"] == "cpu"
    assert record["hardware"]["device"] == "cpu" and record["hardware"]["device_name"]


def test_act_samples_on_the_cpu_from_the_given_generator():
    model = make_model(*_cartpole_spaces())
    obs = torch.randn(64, 4)
    first = act(model, obs, generator=torch.Generator().manual_seed(3))
    again = act(model, obs, generator=torch.Generator().manual_seed(3))
    assert first.actions.device.type == "cpu" and first.actions.shape == (64,)
    assert torch.equal(first.actions, again.actions)
    assert torch.allclose(first.logprobs_all.exp().sum(-1), torch.ones(64))
    greedy = act(model, obs, greedy=True)
    assert torch.equal(greedy.actions, first.logprobs_all.argmax(-1))
    with pytest.raises(FloatingPointError):
        act(model, torch.full((2, 4), float("nan")))


def _cartpole_spaces():
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def _train_then_resume(tmp_path, first: str, second: str) -> tuple[dict, dict]:
    """Train 512 CartPole steps on ``first``, resume to 1,024 on ``second``; both checkpoints."""
    done = run_train(tmp_path, f"--task cartpole --total-steps 512 --seed 4 --device {first} --name r")
    assert done.returncode == 0, done.stderr
    before = load_checkpoint(RunFiles(tmp_path / "r").checkpoint)
    command = [*TRAIN, "--resume", str(tmp_path / "r")]
    done = subprocess.run(
        command + ["--total-steps", "1024", "--device", second], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return before, load_checkpoint(RunFiles(tmp_path / "r").checkpoint)


@pytest.mark.slow
def test_a_checkpoint_written_on_one_device_setting_resumes_and_evaluates_on_another(tmp_path):
    before, after = _train_then_resume(tmp_path, "cpu", "auto")
    assert after["update"] > before["update"]
    assert all(t.device.type == "cpu" for t in after["model"].values())  # loads anywhere
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["device"] == "cpu"  # the creating command's request; the resume ran where it was told
    done = subprocess.run(
        [sys.executable, "-m", "mario_apo.cli", "eval", str(tmp_path / "r"), "--episodes", "2", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@cuda
def test_a_gpu_run_resumes_on_the_cpu_and_back(tmp_path):
    before, after = _train_then_resume(tmp_path, "cuda", "cpu")
    assert after["update"] > before["update"]
    _, back = _train_then_resume(tmp_path / "back", "cpu", "cuda")
    assert all(t.device.type == "cpu" for t in back["model"].values())


@pytest.mark.slow
@cuda
def test_training_on_the_gpu_puts_model_rollout_and_anchors_there(tmp_path):
    cfg = tiny_run_config(tmp_path, task="cartpole", algo="apo", total_steps=1024, device="cuda", wandb="disabled")
    summary = train(cfg, create_run(cfg))
    assert summary["updates"] == cfg.ppo.num_updates and not summary["interrupted"]
    state = load_checkpoint(RunFiles(tmp_path / cfg.log.name).checkpoint)
    model, _ = policy_from_checkpoint(cfg, state, tmp_path, torch.device("cuda"))
    assert next(model.parameters()).is_cuda
