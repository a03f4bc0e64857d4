"""Actions carry decisions out. Each action kind has the same parts: config, do, undo, health.

The registry maps an action `type` (as written in actions.d/*.toml) to its factory.
Actions run argv lists or in-process library calls, never a shell.
"""
