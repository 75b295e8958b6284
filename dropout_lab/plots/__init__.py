"""Curves and sweep plots: learning curves, error against a swept key, heatmaps over two keys.

May import config, nets, store, training and sweeps; nothing here is imported by the wings below it.
"""
