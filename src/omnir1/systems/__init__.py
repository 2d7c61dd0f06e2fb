"""The two systems: Global Reasoning (System 1) and Detail Understanding (System 2)."""
