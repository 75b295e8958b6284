"""dropout-lab: see and reproduce what dropout does (Srivastava et al., JMLR 2014) on MNIST."""

__version__ = "0.1.0"
