"""Reinforcement learning of System 1: rewards and the GRPO trainer."""
