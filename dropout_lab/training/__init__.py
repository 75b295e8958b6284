"""A stack trained and evaluated on verified data.

data (MNIST fetched and checked, subsets), train (the training loop of a stack, its checkpoint state),
evaluate (Monte-Carlo averaging, calibration). May import config, nets and store.
"""
