"""Offline runs over log files, log time as the clock: `mailban test` (run.py: the events, and
the multi-core summary of scan.py), `mailban replay` (run.py: the decisions; report.py: the
peaks per jail for tuning thresholds), `mailban test --missed` (missed.py) and the progress
line they share (progress.py)."""

from .run import DecisionPrinter, ReadCount, file_events, matched_lines, run_replay, run_test

__all__ = ["DecisionPrinter", "ReadCount", "file_events", "matched_lines", "run_replay", "run_test"]
