"""ricenet: tell tumour recurrence from radiation-induced contrast enhancement (RICE)."""

__version__ = "0.1.0"
