"""`ricecli cohort`: from a DICOM export of any layout to a manifest, by headers alone.

Stages (a module imports only those before it): scan + index (walk, header read, incremental
index) -> rules (series-typing rules, TOML) -> series (typing, candidate choice) -> timeline
(dates, post_op, events) -> rtlink (dose, plan, struct, REG) -> labels -> build (cases and skip
rows) -> review (HTML) -> write (COHORT_DIR) -> run (one command run). docs/cohort.md.
"""
