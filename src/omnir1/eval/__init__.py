"""Evaluation: exact J and F (DAVIS-2017 definitions) and the benchmark protocols."""
