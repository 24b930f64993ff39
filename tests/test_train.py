"""A short real Mario run end to end: run dir, metrics.jsonl, offline W&B, anchors; beta = 0 is PPO."""

from __future__ import annotations

import json

import pytest
import torch

from mario_apo.runs import create_run
from mario_apo.train import train

from conftest import wandb_summary

pytestmark = pytest.mark.slow

REQUIRED_METRICS = [
    "charts/episodic_return",
    "charts/success_rate",
    "charts/max_x",
    "charts/SPS",
    "losses/policy",
    "losses/value",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clipfrac",
    "anchor/kl",
    "anchor/count",
    "anchor/best_return",
    "anchor/mean_age_updates",
    "anchor/mb",
]


def test_short_mario_apo_run_writes_metrics_wandb_and_anchors(tiny_config):
    cfg = tiny_config(task="mario:1-1:goal:300", wandb="offline")
    run_dir = create_run(cfg)
    summary = train(cfg, run_dir)
    assert summary["global_step"] == 512

    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"] == "mario:1-1:goal:300" and config["ppo"]["num_envs"] == 2
    assert config["anchor"]["anchor_kl"] == "forward" and config["versions"]["torch"] == torch.__version__

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert all("global_step" in r for r in records)
    seen = set().union(*records)
    assert not [m for m in REQUIRED_METRICS if m not in seen]

    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    # the final-policy evaluation: in summary.json, with sticky actions on, and in the W&B run's summary
    final = json.loads((run_dir / "summary.json").read_text())["final_eval"]
    assert final["sticky_actions"] == 0.25 and final["sampled"]["episodes"] == 4 and final["greedy"]["episodes"] == 2
    wandb_final = {k: v for k, v in wandb_summary(run_dir).items() if k.startswith("final/")}
    assert wandb_final["final/sampled_success_rate"] == final["sampled"]["success_rate"]
    assert wandb_final["final/greedy_mean_max_x"] == final["greedy"]["mean_max_x"]
    assert (run_dir / "checkpoint.pt").exists()
    index = json.loads((run_dir / "anchors.json").read_text())
    assert index["task"] == "mario:1-1:goal:300" and index["anchors"]
    assert all(len(a["actions"]) == a["length"] for a in index["anchors"])


def test_apo_with_beta_zero_is_bit_for_bit_ppo(tiny_config):
    def run(algo: str, beta: float) -> dict:
        cfg = tiny_config(
            task="cartpole", algo=algo, seed=7, total_steps=256 * 12, beta=beta, wandb="disabled", name=f"{algo}{beta}"
        )
        run_dir = create_run(cfg)
        train(cfg, run_dir)
        return torch.load(run_dir / "checkpoint.pt", weights_only=False)

    ppo, apo0, apo = run("ppo", 0.0), run("apo", 0.0), run("apo", 1.0)
    assert apo0["anchors"]["anchors"], "anchors were collected, yet must not change the update"
    for name, tensor in ppo["model"].items():
        assert torch.equal(tensor, apo0["model"][name]), name
    # the same comparison does see the anchor term when beta > 0
    assert any(not torch.equal(t, apo["model"][n]) for n, t in ppo["model"].items())
