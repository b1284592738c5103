import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score

from deepart.objectives.metrics import MetricAccumulator, per_class_table


def test_metrics_match_sklearn_with_missing_labels_and_topk_cap():
    rng = np.random.default_rng(0)
    tasks = {"big": [f"c{i}" for i in range(9)], "small": ["a", "b", "c"]}
    acc = MetricAccumulator(tasks)
    all_y, all_p, all_logits = {t: [] for t in tasks}, {t: [] for t in tasks}, {t: [] for t in tasks}
    for _ in range(4):
        b = 25
        logits = {t: torch.tensor(rng.normal(size=(b, len(c))), dtype=torch.float32) for t, c in tasks.items()}
        labels = torch.tensor(np.stack([rng.integers(-1, 9, b), rng.integers(-1, 3, b)], 1))
        labels[:, 0][labels[:, 0] == 8] = 3  # class 8 never occurs as truth
        acc.update(logits, labels)
        for i, t in enumerate(tasks):
            mask = labels[:, i] >= 0
            all_y[t].append(labels[mask, i].numpy())
            all_p[t].append(logits[t][mask].argmax(-1).numpy())
            all_logits[t].append(logits[t][mask].numpy())
    m = acc.compute("val")
    for t in tasks:
        y, p, z = np.concatenate(all_y[t]), np.concatenate(all_p[t]), np.concatenate(all_logits[t])
        assert m[f"val/{t}/count"] == len(y)
        assert np.isclose(m[f"val/{t}/top1"], (y == p).mean())
        k = min(5, z.shape[1])
        topk = np.argsort(-z, axis=1)[:, :k]
        assert np.isclose(m[f"val/{t}/top5"], (topk == y[:, None]).any(1).mean())
        assert np.isclose(m[f"val/{t}/macro_f1"], f1_score(y, p, average="macro"))
        assert np.isclose(m[f"val/{t}/balanced_acc"], balanced_accuracy_score(y, p))
        table = per_class_table(acc.confusion_matrix(t), tasks[t])
        labels = list(range(len(tasks[t])))
        assert np.allclose(table["precision"], precision_score(y, p, labels=labels, average=None, zero_division=0))
        assert np.allclose(table["recall"], recall_score(y, p, labels=labels, average=None, zero_division=0))
    assert m["val/small/top5"] == 1.0  # k capped at 3 classes
    assert np.isclose(m["val/mean_top1"], np.mean([m["val/big/top1"], m["val/small/top1"]]))
