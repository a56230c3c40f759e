"""Scores and models: the transparent points score (score.py)."""
