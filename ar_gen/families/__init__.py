"""The AR model families: one module each, found by convention (`config.task = NAME` -> `ar_gen.families.NAME`).

A family module defines `Task` (the training task, `ar_gen.runs.task.Task`) and `FAMILY` (a `Family`: its demo
stage and benchmark settings); `registered()` lists them for `ar-gen sample`, the demo and `ar-gen bench`.
See docs/families.md.
"""
