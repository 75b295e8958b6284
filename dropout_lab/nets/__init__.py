"""The nets: K MLPs stacked as one computation, their hand-written step and their update rules.

layers (dropout masks), model (the stacked MLP), step (forward and backward by hand, in each precision),
optim (schedules, max-norm, the SGD rules and Adam), kernel + update.c (the one-pass CPU update).
Imports only the top-level config; every other wing builds on this one.
"""
