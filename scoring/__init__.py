"""Offline batch scoring of large point files through a SavedModel version."""
