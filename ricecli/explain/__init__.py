"""Occlusion sensitivity: which regions drove the answer."""
