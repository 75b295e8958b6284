"""The paper next to ours: the paper's numbers as data (paper), the verdicts that weigh seed noise
(verdicts), the report and its figures (report, report_plots). May import every wing below it, beyond
included (its experiments have sections in the report).
"""
