"""The sweep report, `python -m deepart report`. Its modules, each importing only those above it:
    runs       the runs of sweep dirs as one table (overrides, status, summary columns; via deepart.core.rundir)
    stats      t and Wilson intervals, the paired bootstrap, McNemar's exact test (scipy.stats)
    compare    configs over seeds, the comparison table and the paired tests against a baseline
    tables     the tables as text and Markdown, the sentences and notes
    figures    report.png, report_bars.png, report_curves.png
    html_page  report.html
    sweeps     write_report (every file), the W&B summary run, the command line
"""
from deepart.report.sweeps import log_report_to_wandb, main, write_report

__all__ = ["log_report_to_wandb", "main", "write_report"]
