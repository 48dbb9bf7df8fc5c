"""Experiments beyond the paper (chapter 7) and the real-data experiment (chapters 4, 6, 7)."""
