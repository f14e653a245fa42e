"""The cohort tests' DICOM export tree, `nbia_tree`, lives in tests/conftest.py (the study
tests share it)."""
