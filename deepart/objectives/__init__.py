"""What training optimises and what evaluation measures.

    losses     the loss criteria (classes picked by conf/loss/*.yaml) and the multi-task weighting
    metrics    top-k, macro-F1, balanced accuracy, confusion matrices (masked labels left out)
"""
