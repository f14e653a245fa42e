"""Simulated post-treatment glioblastoma patients with known truth (`ricecli simulate`)."""

from ricecli.simulate.cohort import SimConfig, SimulatedCase, generate_cohort, simulate_case

__all__ = ["SimConfig", "SimulatedCase", "generate_cohort", "simulate_case"]
