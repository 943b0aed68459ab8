"""Counting: `kb count` once per sample with all its lanes, and checks of its FASTQs."""
