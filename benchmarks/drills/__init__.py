"""Drills: real runs while their services or trainings fail on purpose."""
