"""Simulated post-treatment glioblastoma patients with known truth (`ricecli simulate`)."""

from ricecli.simulate.case import SimConfig, SimulatedCase, simulate_case
from ricecli.simulate.cohort import generate_cohort

__all__ = ["SimConfig", "SimulatedCase", "generate_cohort", "simulate_case"]
