"""The paper's MNIST numbers and claims, kept as data in one place; report.py reads them from here.

Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout: A Simple Way to Prevent Neural
Networks from Overfitting", JMLR 15 (2014). Errors are MNIST test errors in percent. The paper's p is
the *retention* probability; our configs use drop = 1 - p.

A table's row labels are the `label` values its config (configs/paper/<config>.yaml) sweeps, which is
how a measured run finds its paper row; tests/test_paper.py holds the two to each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    label: str
    error: float  # percent
    std: float | None = None  # the paper's ± where it gives one


@dataclass(frozen=True)
class Table:
    key: str  # also the config's name: configs/paper/<key>.yaml, results/<key>[-quick]/
    title: str
    caption: str
    rows: tuple[Row, ...]
    out_of_scope: tuple[Row, ...] = field(default_factory=tuple)
    why_out: str = ""


TABLES = {
    "table2": Table(
        "table2", "Table 2", "fully connected nets; dropout nets keep 0.8 of the inputs and 0.5 of the hidden units",
        (Row("standard logistic 2x800", 1.60),
         Row("dropout logistic 3x1024", 1.35),
         Row("dropout ReLU 3x1024", 1.25),
         Row("dropout + max-norm ReLU 3x1024", 1.06),
         Row("dropout + max-norm ReLU 3x2048", 1.04),
         Row("dropout + max-norm ReLU 2x4096", 1.01),
         Row("dropout + max-norm ReLU 2x8192", 0.95)),
        (Row("SVM, Gaussian kernel", 1.40),
         Row("dropout + max-norm maxout 2x(5x240)", 0.94),
         Row("DBN pretraining + dropout finetuning", 0.92),
         Row("DBM pretraining + dropout finetuning", 0.79)),
        "not MLPs trained from scratch: the SVM is another model, maxout another unit (it may come later "
        "as an activation), and the DBN/DBM rows need generative pretraining",
    ),
    "table9": Table(
        "table9", "Table 9", "regularisers on 784-1024-1024-2048-10 ReLU, each tuned on validation in the paper",
        (Row("L2", 1.62),
         Row("L2 + L1", 1.60),
         Row("L2 + KL-sparsity", 1.55),
         Row("max-norm", 1.35),
         Row("dropout + L2", 1.25),
         Row("dropout + max-norm", 1.05)),
    ),
    "table10_gaussian": Table(
        "table10_gaussian", "Table 10", "Bernoulli against Gaussian multiplicative noise, 2x1024 (MNIST row)",
        (Row("Bernoulli dropout", 1.08, 0.04),
         Row("Gaussian dropout", 0.95, 0.04)),
    ),
}

# Table 9's ordering, as groups from worst to best: every mean of a group is above every mean of the next
TABLE9_ORDER = (("L2", "L2 + L1", "L2 + KL-sparsity"), ("max-norm",), ("dropout + L2",), ("dropout + max-norm",))

# the qualitative claims of the figures, in the paper's words; report.py computes a verdict for each
CLAIMS = {
    "fig4": ("Figure 4", "Six nets (2, 3 or 4 layers of 1024 or 2048 units): test error falls into two clusters, "
                         "about 1.7-1.8% without dropout and 1.0-1.3% with it."),
    "fig9a": ("Figure 9a", "n fixed (784-2048-2048-2048-10): small retention p underfits; the error is flat for "
                           "0.4 <= p <= 0.8."),
    "fig9b": ("Figure 9b", "p*n fixed at 256, 256, 512: the best p is about 0.6, and 0.5 is close."),
    "fig10": ("Figure 10", "Training sets of 100 ... 50k images: dropout gives no gain at 100 and 500; the gain "
                           "grows with the data, then shrinks."),
    "fig11": ("Figure 11", "Monte-Carlo averaging of k thinned nets matches weight scaling at about k = 50; "
                           "beyond that MC is slightly better, within one standard deviation."),
    "table9": ("Table 9", "Dropout + max-norm beats dropout + L2, which beats max-norm alone, which beats L2, "
                          "L2 + L1 and L2 + KL-sparsity."),
    "table10_gaussian": ("Table 10", "Gaussian multiplicative noise, r ~ N(1, p/(1-p)), does no worse than "
                                     "Bernoulli dropout (0.95 ± 0.04% against 1.08 ± 0.04% on MNIST)."),
}

# the training recipes the configs start from (each config's top comment says which one it follows)
RECIPES = {
    "authors": "The authors' code (nitishsrivastava/deepnet, examples/ff/model_dropout.pbtxt), 784-1024-1024-2048-10: "
               "ReLU, drop 0.2 on inputs and 0.5 on hidden layers with an unscaled mask in training and weights "
               "scaled by the retention at test; D <- m D + grad, w <- w - lr D (parameter.py Update); lr 1.0 "
               "inverse-t with half-life 10,000 steps; momentum 0.5 -> 0.99 by m_f - (m_f - m_i) exp(-t / 100,000); "
               "max-norm c = 3 on every layer, no L2; init N(0, sigma^2 / n_out), sigma 1 (0.001 on the first "
               "layer); batch 100, 1,000,000 steps. Appendix B.1: final momentum 0.95 and c = 2 for the Figure 4 "
               "and Table 2 nets, and the final nets retrained on all 60,000 images.",
    "arxiv2012": "The 2012 arXiv recipe: lr 10 x 0.998 per epoch with dw = m dw - (1-m) lr grad; momentum "
                 "0.5 -> 0.99 linear over 500 epochs; max-norm c = sqrt(15); init N(0, 0.01^2); batch 100, "
                 "3000 epochs.",
    "appendix_a": "Appendix A's advice: lr 10-100x the no-dropout one, momentum 0.95-0.99, c = 3-4.",
}

# configs/paper/*.yaml, in the order the report shows them
CONFIGS = ("table2", "table9", "table10_gaussian", "fig4", "fig9a", "fig9b", "fig10", "fig11")
