"""What training optimises and what evaluation measures.

    losses       the loss criteria (classes picked by conf/loss/*.yaml), soft targets, the multi-task weighting
    metrics      top-k, macro-F1, balanced accuracy, ECE per task, confusion matrices (masked labels left out)
    calibration  expected calibration error, per-task temperature scaling, coverage vs accuracy
    retrieval    precision@k and mean average precision of same-label retrieval
"""
