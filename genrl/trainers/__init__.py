"""Trainers: ``online`` (rollout -> reward -> advantage -> update)."""
