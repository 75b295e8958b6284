"""Sweeps: expanded, scaled, planned into stacks and run, locally or on Ray, with progress a person can watch.

sweep (the sweep: section), scale (quick and medium), stacks (planning, memory, the dry run), runner (one
stack with checkpoints and signals), local and distributed (backends), watch (progress and time left),
campaign (one `sweep` invocation). May import config, tables, nets, store and training.
"""
