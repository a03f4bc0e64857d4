"""The pure core of mailban: parse, filter, count and decide.

Contract: nothing under mailban.core performs I/O or reads the clock. Lines and times go in,
events and command records come out. tests/test_core_purity.py walks the imports to keep it so.
"""
