"""Export: fold checkpoints -> one verified ONNX model (to_onnx), sibling convs merged once
(merge_convs)."""
