"""A stack trained and evaluated on verified data.

data (MNIST fetched and checked, subsets), train (the training loop of a stack), stack_state (one model's
checkpoint state), evaluate (clean test passes, Monte-Carlo averaging, calibration). May import config, nets and store.
"""
