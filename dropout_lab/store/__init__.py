"""The results folder on disk: written crash-safely, read back checked.

results (atomic writes, metrics, provenance, checkpoints and resume points, the lock, index.csv), readback
(each file checked, a damaged one named in one line), sweep_index (an index read as data), guard (refusals
before any work). May import config and nets (a run's precision facts), nothing above.
"""
