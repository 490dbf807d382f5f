"""retrieval_metrics against pytorch-metric-learning, a brute-force loop and hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mobile_distill.evaluate import embed, format_comparison, format_table, retrieval_metrics

import pytorch_metric_learning.utils.accuracy_calculator as pml_acc  # noqa: E402
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance  # noqa: E402
from pytorch_metric_learning.utils.inference import CustomKNN  # noqa: E402

KS = (1, 2, 4, 8)


def _data(n_classes=50, max_size=20, dim=16, seed=0):
    """Seeded random embeddings with class sizes 1..max_size (so some singletons)."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, max_size + 1, (n_classes,), generator=g)
    sizes[0] = 1  # make sure at least one singleton class exists
    labels = torch.repeat_interleave(torch.arange(n_classes) * 3 + 7, sizes)  # non-contiguous ids
    labels = labels[torch.randperm(len(labels), generator=g)]
    return torch.randn(len(labels), dim, generator=g), labels


class RecallCalculator(pml_acc.AccuracyCalculator):
    """PML's documented extension point: ``calculate_<name>`` methods + ``requires_knn``."""

    def _recall(self, k, knn_labels, query_labels, not_lone_query_mask):
        knn, q = knn_labels[not_lone_query_mask], query_labels[not_lone_query_mask]
        return (knn[:, :k] == q[:, None]).any(1).double().mean().item()

    def calculate_recall_at_2(self, knn_labels, query_labels, not_lone_query_mask, **kwargs):
        return self._recall(2, knn_labels, query_labels, not_lone_query_mask)

    def calculate_recall_at_4(self, knn_labels, query_labels, not_lone_query_mask, **kwargs):
        return self._recall(4, knn_labels, query_labels, not_lone_query_mask)

    def calculate_recall_at_8(self, knn_labels, query_labels, not_lone_query_mask, **kwargs):
        return self._recall(8, knn_labels, query_labels, not_lone_query_mask)

    def requires_knn(self):
        return super().requires_knn() + ["recall_at_2", "recall_at_4", "recall_at_8"]


def _pml(emb, labels, distance):
    calc = RecallCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "recall_at_2", "recall_at_4", "recall_at_8"),
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=CustomKNN(distance),  # faiss is not a dependency
    )
    return calc.get_accuracy(emb, labels, emb, labels, ref_includes_query=True)


def _brute_force(emb, labels, ks=KS):
    """Double loop in float64 numpy: the definitions, written out."""
    x = emb.double().numpy()
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = labels.numpy()
    n = len(y)
    hits, aps = np.zeros(len(ks)), []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        sims = np.array([x[i] @ x[j] for j in others])
        ranked = [y[others[j]] for j in np.argsort(-sims, kind="stable")]
        r = sum(1 for j in others if y[j] == y[i])
        if r == 0:
            continue
        for m, k in enumerate(ks):
            hits[m] += any(lab == y[i] for lab in ranked[:k])
        correct, ap = 0, 0.0
        for pos in range(r):
            if ranked[pos] == y[i]:
                correct += 1
                ap += correct / (pos + 1)
        aps.append(ap / r)
    nq = len(aps)
    return {**{f"recall@{k}": hits[m] / nq for m, k in enumerate(ks)}, "map@r": float(np.mean(aps)), "num_queries": nq}


@pytest.mark.parametrize("distance", [CosineSimilarity(), LpDistance(normalize_embeddings=True)], ids=["cos", "l2"])
def test_matches_pytorch_metric_learning(distance):
    emb, labels = _data()
    ours = retrieval_metrics(emb, labels, ks=KS)
    ref = _pml(emb, labels, distance)
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    for k in (2, 4, 8):
        assert ours[f"recall@{k}"] == pytest.approx(ref[f"recall_at_{k}"], abs=1e-6)
    singletons = int((torch.unique(labels, return_counts=True)[1] == 1).sum())
    assert singletons >= 1 and ours["num_excluded"] == singletons
    assert ours["num_queries"] == len(labels) - singletons


def test_matches_brute_force():
    emb, labels = _data(n_classes=15, max_size=10, dim=8, seed=1)
    ours = retrieval_metrics(emb, labels, ks=KS, chunk_size=16)
    ref = _brute_force(emb, labels)
    assert ours["num_queries"] == ref["num_queries"]
    for key in [*(f"recall@{k}" for k in KS), "map@r"]:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


def test_chunking_invariance():
    emb, labels = _data(seed=2)
    domains = ["a" if i % 3 else "b" for i in range(len(labels))]
    small = retrieval_metrics(emb, labels, ks=(1, 5, 1000), chunk_size=7, domains=domains)
    big = retrieval_metrics(emb, labels, ks=(1, 5, 1000), chunk_size=10000, domains=domains)
    assert small == big
    assert small["recall@1000"] == 1.0  # K beyond N-1 means "anywhere in the gallery"


def test_cross_domain_known_by_construction():
    # Points on the unit circle, so cosine order == angular distance order (no ties).
    items = [  # (domain, label, angle in degrees)
        ("google", 0, 0), ("google", 1, 90), ("google", 2, 180),
        ("twitter", 0, 10), ("twitter", 1, 200), ("twitter", 2, 100),
        ("twitter", 3, 270),  # class 3 has no google item: a distractor for google, excluded as query
    ]
    ang = torch.tensor([math.radians(a) for _, _, a in items], dtype=torch.float64)
    emb = torch.stack([ang.cos(), ang.sin()], 1).float() * torch.tensor([[3.0]])  # scale must not matter
    labels = torch.tensor([lab for _, lab, _ in items])
    out = retrieval_metrics(emb, labels, ks=(1, 2, 4), domains=[d for d, _, _ in items])
    # google 0° -> twitter 10° (class 0) first; google 90° -> 100°(2), 10°(0), 200°(1): class 1 at rank 3;
    # google 180° -> 200°(1), 100°(2): class 2 at rank 2.
    assert out["cross/google->twitter/recall@1"] == pytest.approx(1 / 3)
    assert out["cross/google->twitter/recall@2"] == pytest.approx(2 / 3)
    assert out["cross/google->twitter/recall@4"] == 1.0
    assert out["cross/google->twitter/num_queries"] == 3
    # twitter 10° -> google 0° first; 200° -> 180°(2), 90°(1); 100° -> 90°(1), 180°(2).
    assert out["cross/twitter->google/recall@1"] == pytest.approx(1 / 3)
    assert out["cross/twitter->google/recall@2"] == 1.0
    assert out["cross/twitter->google/num_queries"] == 3  # twitter class 3 has nothing to find
    assert out["num_excluded"] == 1 and out["num_queries"] == 6


def test_singleton_query_excluded():
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # item 4 is alone in class 2
    out = retrieval_metrics(emb, labels, ks=(1,))
    assert out["num_excluded"] == 1 and out["num_queries"] == 4
    assert out["recall@1"] == 1.0 and out["map@r"] == 1.0  # the singleton would otherwise score 0
    # It still sits in the gallery as a distractor: at 1.2° it lies between item 0 (0°) and
    # item 1 (6.3°) and is the nearest neighbour of both, so both miss at rank 1.
    emb[4] = torch.tensor([0.95, 0.02])
    out = retrieval_metrics(emb, labels, ks=(1, 2))
    assert out["recall@1"] == pytest.approx(2 / 4) and out["recall@2"] == 1.0 and out["num_queries"] == 4
    alone = retrieval_metrics(torch.randn(4, 3), torch.arange(4), ks=(1,))
    assert alone["num_queries"] == 0 and math.isnan(alone["recall@1"]) and math.isnan(alone["map@r"])


def test_embed_orders_by_index_and_restores_mode():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    model.train()
    x, y = torch.randn(10, 1, 2, 2), torch.arange(10) % 3
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    loader = [(x[perm[i : i + 4]], y[perm[i : i + 4]], perm[i : i + 4]) for i in range(0, 10, 4)]
    emb, lab = embed(model, loader, "cpu", progress=False)
    assert model.training and emb.shape == (10, 3) and emb.dtype == torch.float32
    assert torch.equal(lab, y)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(emb, model(x))  # eval mode: dropout off, dataset order


def test_format_table_and_comparison():
    m = {"recall@1": 0.61234, "recall@10": 0.9, "map@r": 0.25, "num_queries": 120, "num_excluded": 0}
    table = format_table(m, title="emoji")
    assert table.splitlines()[0] == "emoji" and "61.2" in table and "90.0" in table and "120" in table
    comp = format_comparison({"teacher": m, "student-lite0": {"recall@1": 0.5, "map@r": 0.2}})
    lines = comp.splitlines()
    assert lines[0].split() == ["model", "recall@1", "recall@10", "map@r"]
    assert lines[3].split() == ["student-lite0", "50.0", "-", "20.0"]


def test_exact_ties_count_against_the_query_whatever_the_k_list():
    # Query 0's positive (item 1) and a negative (item 2) are the same vector: an exact tie.
    # The tie counts as a miss at K=1 (the negative ranks with it), a hit at K=2, and Recall@1
    # must not depend on which other K are asked for (topk breaks ties differently per k).
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [-1.0, 0.0], [-0.6, -0.8]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    labels[4] = 1  # item 2's class has positives (3, 4) so every query is valid
    alone = retrieval_metrics(emb, labels, ks=(1,))
    full = retrieval_metrics(emb, labels, ks=(1, 2, 4))
    assert alone["recall@1"] == full["recall@1"]
    # query 0: positive 1 tied with negative 2 -> miss at 1, hit at 2; query 1: nearest is 2 (neg,
    # identical) then 0 -> miss at 1; query 2: nearest is 1 (neg) ... -> miss at 1
    sims = torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(emb, dim=1).T
    expected_r1 = 0
    for q in range(5):
        others = [j for j in range(5) if j != q]
        best_pos = max(sims[q, j] for j in others if labels[j] == labels[q])
        ahead = sum(1 for j in others if labels[j] != labels[q] and sims[q, j] >= best_pos)
        expected_r1 += ahead == 0
    assert full["recall@1"] == pytest.approx(expected_r1 / 5)
    assert full["map@r"] <= full["recall@4"]


def test_non_finite_embeddings_are_refused_with_their_row_count(tmp_path):
    from mobile_distill.errors import DataError
    from mobile_distill.evaluate import check_finite

    emb, labels = torch.randn(10, 4), torch.arange(10) % 3
    gallery = emb.clone()
    gallery[4, 1] = float("inf")
    with pytest.raises(DataError, match=r"the gallery embeddings: 1 of 10 rows contain NaN or infinity \(first: row 4\)"):
        retrieval_metrics(emb, labels, gallery=gallery)
    emb[[1, 2], 0] = float("nan")
    with pytest.raises(DataError, match="2 of 10 rows"):
        retrieval_metrics(emb, labels)
    cache = np.lib.format.open_memmap(tmp_path / "cache.npy", mode="w+", dtype=np.float32, shape=(5, 3, 4))
    cache[2, 1, 0] = np.nan  # a (image, view, D) teacher cache: one view of image 2
    cache.flush()
    with pytest.raises(DataError, match=r"1 of 5 rows .*row 2\)"):
        check_finite(np.load(tmp_path / "cache.npy", mmap_mode="r"), "the teacher cache")


def test_ties_count_against_the_query_for_every_k_map_at_r_and_cross_domain():
    """Items are copies of four directions, so many similarities tie exactly (and only those): a
    float64 brute force that ranks, among equal similarities, other-class items first must agree
    on every Recall@K, MAP@R and cross-domain Recall@K."""
    g = torch.Generator().manual_seed(3)
    directions = torch.nn.functional.normalize(torch.randn(4, 6, generator=g), dim=1)
    n = 40
    emb = directions[torch.randint(0, 4, (n,), generator=g)]
    labels = torch.randint(0, 5, (n,), generator=g)
    domains = [("a", "b", "c")[i] for i in torch.randint(0, 3, (n,), generator=g).tolist()]
    ks = (1, 2, 4, 8)
    got = retrieval_metrics(emb, labels, ks=ks, domains=domains, chunk_size=7)

    sims = emb.double() @ emb.double().T

    def ranked(q, gallery):  # pessimistic: a tie puts the other-class item first
        return [bool(labels[j] == labels[q]) for j in sorted(gallery, key=lambda j: (-float(sims[q, j]),
                                                                                    bool(labels[j] == labels[q])))]

    hits, aps, valid = {k: 0 for k in ks}, [], 0
    for q in range(n):
        rel = ranked(q, [j for j in range(n) if j != q])
        r = sum(rel)
        if r == 0:
            continue
        valid += 1
        for k in ks:
            hits[k] += any(rel[:k])
        aps.append(sum(sum(rel[:i + 1]) / (i + 1) for i in range(r) if rel[i]) / r)
    assert got["num_queries"] == valid
    for k in ks:
        assert got[f"recall@{k}"] == pytest.approx(hits[k] / valid, abs=1e-12), k
    assert got["map@r"] == pytest.approx(sum(aps) / valid, abs=1e-12)
    assert got["recall@1"] < got["recall@8"]  # ties really decide some queries here

    pair_means = {k: [] for k in ks}
    for a in "abc":
        for b in "abc":
            if a == b:
                continue
            pair_hits, nq = {k: 0 for k in ks}, 0
            for q in (i for i in range(n) if domains[i] == a):
                rel = ranked(q, [j for j in range(n) if domains[j] == b])
                if not any(rel):
                    continue
                nq += 1
                for k in ks:
                    pair_hits[k] += any(rel[:k])
            assert got[f"cross/{a}->{b}/num_queries"] == nq
            for k in ks:
                assert got[f"cross/{a}->{b}/recall@{k}"] == pytest.approx(pair_hits[k] / nq, abs=1e-12), (a, b, k)
                pair_means[k].append(pair_hits[k] / nq)
    for k in ks:
        assert got[f"cross/mean/recall@{k}"] == pytest.approx(sum(pair_means[k]) / len(pair_means[k]), abs=1e-12)
