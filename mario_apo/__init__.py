"""mario-apo: PPO and Anchored Policy Optimization (APO) on Super Mario Bros."""

__version__ = "0.1.0"
