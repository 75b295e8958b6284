"""Experiments beyond the paper's tables: dropout as ridge (section 9.1), features and sparsity (Figures 7
and 8), and dropout on conv layers. May import every wing below it (config, nets, store, training, sweeps,
plots).
"""
