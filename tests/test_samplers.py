import numpy as np
import torch

from deepart.data.samplers import RandomEpochSampler, WeightedTaskSampler, inverse_frequency_weights


def imbalanced_labels(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    style = rng.choice(3, size=n, p=[0.8, 0.15, 0.05])
    genre = rng.choice(2, size=n, p=[0.5, 0.5])
    genre[rng.random(n) < 0.3] = -1
    return np.stack([style, genre], 1)


def test_weighted_sampler_balances_classes():
    labels = imbalanced_labels()
    sampler = WeightedTaskSampler(labels, task_names=["style", "genre"], tasks=["style"], seed=1)
    drawn = np.array([i for i, _ in sampler])
    freq = np.bincount(labels[drawn, 0], minlength=3) / len(drawn)
    assert np.allclose(freq, 1 / 3, atol=0.04), freq


def test_weights_are_one_for_balanced_tasks_and_mean_over_labelled_tasks():
    labels = np.array([[0, 0], [1, 1], [0, -1], [1, -1]])
    assert np.allclose(inverse_frequency_weights(labels), 1.0)
    labels = np.array([[0, -1], [0, -1], [0, -1], [1, -1]])
    w = inverse_frequency_weights(labels)
    assert np.isclose(w[3] / w[0], 3.0)


def test_draw_is_a_function_of_seed_and_epoch():
    labels = imbalanced_labels(200)
    a = WeightedTaskSampler(labels, seed=5)
    b = WeightedTaskSampler(labels, seed=5)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)


def test_ranks_take_disjoint_shares_of_the_same_draw():
    labels = imbalanced_labels(101)
    for cls in (RandomEpochSampler, WeightedTaskSampler):
        full = list(cls(labels, seed=2))
        shards = [list(cls(labels, seed=2, rank=r, world_size=2)) for r in range(2)]
        assert len(shards[0]) == len(shards[1]) == 51
        positions = sorted(range(0, 102, 2)) + sorted(range(1, 102, 2))
        merged = shards[0] + shards[1]
        padded = full + full[:1]
        assert [padded[p] for p in positions] == merged


def test_random_sampler_is_a_permutation():
    labels = imbalanced_labels(50)
    idx = [i for i, _ in RandomEpochSampler(labels, seed=0)]
    assert sorted(idx) == list(range(50))
    assert torch.is_tensor(torch.tensor(idx))
