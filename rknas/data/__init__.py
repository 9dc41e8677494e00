"""Data sets as in-memory tensors."""
