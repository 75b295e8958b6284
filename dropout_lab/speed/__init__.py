"""The benchmark and its measuring stick: bench (a tuned PyTorch loop against the stacked trainer) and peak
(FLOPs, the GEMM and bandwidth probes, the roofline floor). May import every wing below it; only cli
imports it.
"""
