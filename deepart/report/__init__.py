"""The sweep report: collect the runs of sweeps, compare configs over seeds and against a baseline
(paired statistics), draw the figures and write report.md / report.html. `python -m deepart.report`."""
from deepart.report.sweeps import log_report_to_wandb, main, write_report

__all__ = ["log_report_to_wandb", "main", "write_report"]
