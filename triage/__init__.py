"""Triage: the labelled corpus and the training of the triage models (issue 15)."""
