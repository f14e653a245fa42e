"""ricenet training: the paper's protocol (5-fold CV, fold ensemble, channel ablations)."""
