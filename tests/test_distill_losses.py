"""Distillation losses against slow, explicit-loop references (value and gradient), plus the
combination helpers (``--distill`` parsing, ``WeightedSum``, ``build_distill_losses``)."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mobile_distill.errors import ConfigError, RegistryError
from mobile_distill.losses import create_loss
from mobile_distill.losses.absolute import AbsoluteLoss
from mobile_distill.losses.attention import AttentionTransferLoss
from mobile_distill.losses.contrastive import ContrastiveLoss
from mobile_distill.losses.prototype import PrototypeLoss
from mobile_distill.losses.combine import WeightedSum, build_distill_losses, distill_loss_names, parse_distill_spec
from mobile_distill.models.features import collect_features
from mobile_distill.losses.darkrank import DarkRankLoss
from mobile_distill.losses.hint import HintLoss
from mobile_distill.losses.relative import RelativeLoss, pairwise_distances
from mobile_distill.losses.relaxed import RelaxedContrastiveLoss
from mobile_distill.losses.rkd import RKDLoss

B, D = 6, 5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def emb(n: int, d: int, seed: int) -> torch.Tensor:
    """L2-normalised float64 embeddings, like the models' output."""
    return F.normalize(torch.randn(n, d, generator=_gen(seed), dtype=torch.float64), dim=1)


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


# ---------------------------------------------------------------- slow references (explicit loops)

def unit(v):
    return v / v.pow(2).sum().sqrt()


def dist(a, b):
    return (a - b).pow(2).sum().sqrt()


def smooth_l1(x):
    return 0.5 * x * x if abs(float(x.detach())) < 1.0 else x.abs() - 0.5


def ref_absolute(s, t, weight=None):
    n = s.shape[0]
    total = 0.0
    for i in range(n):
        si = s[i] if weight is None else weight @ s[i]
        total = total + dist(unit(si), unit(t[i]))
    return total / n


def ref_relative(s, t, normalize=False):
    n = s.shape[0]
    acc = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                acc = acc + (dist(unit(s[i]), unit(s[j])) - dist(unit(t[i]), unit(t[j]))) ** 2
    value = acc ** 0.5
    return value / n if normalize else value


def ref_rkd(s, t, distance_weight=1.0, angle_weight=2.0):
    n = s.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    mu_s = sum(dist(s[i], s[j]) for i, j in pairs) / len(pairs)
    mu_t = sum(dist(t[i], t[j]) for i, j in pairs) / len(pairs)
    # lenscloth averages over the full N x N matrix: the diagonal adds 0 but counts.
    l_dist = sum(smooth_l1(dist(s[i], s[j]) / mu_s - dist(t[i], t[j]) / mu_t) for i, j in pairs) / n ** 2

    def cos(e, i, j, k):
        u, v = e[j] - e[i], e[k] - e[i]
        return (u * v).sum() / (u.pow(2).sum().sqrt() * v.pow(2).sum().sqrt())

    l_angle = 0.0
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if j != i and k != i:  # the (N, N, N) tensor holds 0 for both networks there
                    l_angle = l_angle + smooth_l1(cos(s, i, j, k) - cos(t, i, j, k))
    l_angle = l_angle / n ** 3
    return distance_weight * l_dist + angle_weight * l_angle


def ref_relaxed(s, t, sigma=1.0, delta=1.0):
    n = s.shape[0]
    total = 0.0
    for i in range(n):
        row_mean = sum(dist(s[i], s[j]) for j in range(n) if j != i) / n  # official: mean over all N
        for j in range(n):
            if j == i:
                continue
            w = torch.exp(-dist(unit(t[i]), unit(t[j])) ** 2 / sigma)
            d = dist(s[i], s[j]) / row_mean
            total = total + w * d ** 2 + (1 - w) * torch.clamp(delta - d, min=0) ** 2
    return total / n


def ref_darkrank(s, t, alpha=3.0, beta=3.0, k=4):
    n = s.shape[0]
    total = 0.0
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: float(dist(t[i], t[j])))[:k]
        scores = [-alpha * dist(s[i], s[j]) ** beta for j in others]
        for a in range(k):
            tail = sum(torch.exp(scores[b]) for b in range(a, k))
            total = total + scores[a] - torch.log(tail)
    return -total / n


def _downsample2(grid, h, w):
    # Bilinear, align_corners=False, from 2h x 2w to h x w samples at 2y + 0.5: the mean of each
    # 2 x 2 block.
    return [[(grid[2 * y][2 * x] + grid[2 * y][2 * x + 1] + grid[2 * y + 1][2 * x] + grid[2 * y + 1][2 * x + 1]) / 4
             for x in range(w)] for y in range(h)]


def ref_hint(fs, ft, weight, bias):
    b_, c_s, h_s, w_s = fs.shape
    _, c_t, h_t, w_t = ft.shape
    total, count = 0.0, 0
    for b in range(b_):
        for c in range(c_t):
            grid = [[bias[c] + sum(weight[c, k] * fs[b, k, y, x] for k in range(c_s)) for x in range(w_s)]
                    for y in range(h_s)]
            if (h_s, w_s) != (h_t, w_t):
                assert (h_s, w_s) == (2 * h_t, 2 * w_t)
                grid = _downsample2(grid, h_t, w_t)
            for y in range(h_t):
                for x in range(w_t):
                    total = total + (grid[y][x] - ft[b, c, y, x]) ** 2
                    count += 1
    return total / count


def ref_attention(s_maps, t_maps):
    terms = []
    for fs, ft in zip(s_maps, t_maps):
        b_, _, h_t, w_t = ft.shape
        term = 0.0
        for b in range(b_):
            def channel_mean_sq(f, h, w):
                return [[sum(f[b, c, y, x] ** 2 for c in range(f.shape[1])) / f.shape[1] for x in range(w)]
                        for y in range(h)]
            a_s = channel_mean_sq(fs, fs.shape[2], fs.shape[3])
            if fs.shape[2:] != ft.shape[2:]:
                a_s = _downsample2(a_s, h_t, w_t)
            a_t = channel_mean_sq(ft, h_t, w_t)
            flat_s = [v for row in a_s for v in row]
            flat_t = [v for row in a_t for v in row]
            norm_s = sum(v ** 2 for v in flat_s) ** 0.5
            norm_t = sum(v ** 2 for v in flat_t) ** 0.5
            for vs, vt in zip(flat_s, flat_t):
                term = term + (vs / norm_s - vt / norm_t) ** 2
        terms.append(term / (b_ * h_t * w_t))
    return sum(terms) / len(terms)


# ---------------------------------------------------------------- cases: (value, reference, leaves)

def case_absolute():
    s, t = leaf(emb(B, D, 1)), emb(B, D, 2)
    same = (AbsoluteLoss(D, D)(s, t)["absolute"], ref_absolute(s, t), [s])
    proj_loss = AbsoluteLoss(D, 7).double()
    s2, t2 = leaf(emb(B, D, 3)), emb(B, 7, 4)
    w = proj_loss.projection.weight
    projected = (proj_loss(s2, t2)["absolute"], ref_absolute(s2, t2, weight=w), [s2, w])
    return [same, projected]


def case_relative():
    s, t = leaf(emb(B, D, 5)), emb(B, D, 6)
    return [(RelativeLoss()(s, t)["relative"], ref_relative(s, t), [s]),
            (RelativeLoss(normalize=True)(s, t)["relative"], ref_relative(s, t, normalize=True), [s])]


def case_rkd():
    # Un-normalised student with one far outlier, so that both SmoothL1 branches (|x| < 1 and
    # |x| >= 1) occur in the distance and in the angle term.
    scale = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 12.0], dtype=torch.float64).unsqueeze(1)
    s = leaf(torch.randn(B, D, generator=_gen(7), dtype=torch.float64) * scale)
    t = emb(B, D, 8)
    return [(RKDLoss()(s, t)["rkd"], ref_rkd(s, t), [s]),
            (RKDLoss(0.5, 3.0)(s, t)["rkd"], ref_rkd(s, t, 0.5, 3.0), [s])]


def case_relaxed():
    s, t = leaf(emb(B, D, 9)), emb(B, D, 10)
    s2 = leaf(torch.randn(B, D, generator=_gen(11), dtype=torch.float64))
    return [(RelaxedContrastiveLoss()(s, t)["relaxed"], ref_relaxed(s, t), [s]),
            (RelaxedContrastiveLoss(sigma=0.5, delta=1.2)(s2, t)["relaxed"], ref_relaxed(s2, t, 0.5, 1.2), [s2])]


def case_darkrank():
    s, t = leaf(emb(B, D, 12)), emb(B, D, 13)
    return [(DarkRankLoss()(s, t)["darkrank"], ref_darkrank(s, t), [s]),
            (DarkRankLoss(alpha=2, beta=3, permute_len=3)(s, t)["darkrank"], ref_darkrank(s, t, 2, 3, 3), [s])]


def _maps(shape, seed):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)


def case_hint():
    s_emb, t_emb = emb(B, D, 14), emb(B, D, 15)
    out = []
    for s_shape, t_shape in (((B, 3, 4, 4), (B, 5, 2, 2)), ((B, 3, 2, 2), (B, 5, 2, 2))):
        loss = HintLoss(3, 5).double()
        fs, ft = leaf(_maps(s_shape, 16)), _maps(t_shape, 17)
        w = loss.regressor.weight
        value = loss(s_emb, t_emb, [fs], [ft])["hint"]
        out.append((value, ref_hint(fs, ft, w[:, :, 0, 0], loss.regressor.bias), [fs, w, loss.regressor.bias]))
    return out


def case_attention():
    s_emb, t_emb = emb(B, D, 18), emb(B, D, 19)
    fs = [leaf(_maps((B, 3, 4, 4), 20)), leaf(_maps((B, 4, 2, 2), 21))]
    ft = [_maps((B, 5, 2, 2), 22), _maps((B, 7, 2, 2), 23)]
    value = AttentionTransferLoss((0, 1), (1, 2))(s_emb, t_emb, fs, ft)["attention"]
    return [(value, ref_attention(fs, ft), fs)]


def ref_contrastive(s, t, labels, tau, keys=(), key_labels=(), hard=0, mask=False):
    """Per query: -log softmax of its own teacher embedding among the kept keys, by loops."""
    s = [v / v.norm() for v in s]
    t = [v / v.norm() for v in t]
    total = 0.0
    for i in range(len(s)):
        def kept(label):
            return not (mask and labels[i] >= 0 and label == labels[i])
        scores = [s[i] @ t[i]] + [s[i] @ t[j] for j in range(len(t)) if j != i and kept(labels[j])]
        extra = sorted((s[i] @ k for k, y in zip(keys, key_labels) if kept(y)), key=float, reverse=True)
        scores += extra[:hard] if hard else extra
        total = total - scores[0] / tau + torch.log(sum(torch.exp(x / tau) for x in scores))
    return total / len(s)


def case_contrastive():
    labels = torch.tensor([0, 0, 1, 1, -1, -1])
    s, t = leaf(emb(B, D, 24)), emb(B, D, 25)
    plain = (ContrastiveLoss(D, D, temperature=0.1)(s, t)["contrastive"], ref_contrastive(s, t, [-1] * B, 0.1), [s])
    # a queue of 4: the first batch fills it with its last 4 teacher rows; the second batch mines its
    # 2 hardest queue keys and masks its own class in both the batch and the queue
    loss = ContrastiveLoss(D, D, temperature=0.2, queue=4, hard=2, mask_same_class=True).double()
    t1, labels1 = emb(B, D, 26), torch.tensor([1, 2, 3, 0, 1, -1])
    loss(emb(B, D, 27), t1, labels=labels1)
    keys = [v / v.norm() for v in t1[-4:]]
    s2, t2 = leaf(emb(B, D, 28)), emb(B, D, 29)
    queued = (loss(s2, t2, labels=labels)["contrastive"],
              ref_contrastive(s2, t2, labels.tolist(), 0.2, keys, labels1[-4:].tolist(), hard=2, mask=True), [s2])
    proj = ContrastiveLoss(4, D, temperature=0.1).double()
    s3 = leaf(torch.randn(B, 4, generator=_gen(30), dtype=torch.float64))
    w = proj.projection.weight
    projected = (proj(s3, t)["contrastive"], ref_contrastive([w @ v for v in s3], t, [-1] * B, 0.1), [s3, w])
    return [plain, queued, projected]


def ref_prototype(s, t, labels, tau):
    rows = [i for i in range(len(s)) if labels[i] >= 0]
    classes = sorted({labels[i] for i in rows})
    prototypes = []
    for c in classes:
        mean = sum(t[i] / t[i].norm() for i in rows if labels[i] == c)
        prototypes.append(mean / mean.norm())
    total = 0.0
    for i in rows:
        q = s[i] / s[i].norm()
        scores = [q @ p / tau for p in prototypes]
        total = total - scores[classes.index(labels[i])] + torch.log(sum(torch.exp(x) for x in scores))
    return total / len(rows)


def case_prototype():
    labels = torch.tensor([2, 0, 2, 0, 5, -1])
    s, t = leaf(emb(B, D, 31)), emb(B, D, 32)
    plain = (PrototypeLoss(D, D, temperature=0.1)(s, t, labels=labels)["prototype"],
             ref_prototype(s, t, labels.tolist(), 0.1), [s])
    proj = PrototypeLoss(4, D).double()
    s2 = leaf(torch.randn(B, 4, generator=_gen(33), dtype=torch.float64))
    w = proj.projection.weight
    projected = (proj(s2, t, labels=labels)["prototype"], ref_prototype([w @ v for v in s2], t, labels.tolist(), 0.05),
                 [s2, w])
    return [plain, projected]


REFERENCE_CASES = {
    "absolute": case_absolute, "relative": case_relative, "rkd": case_rkd, "relaxed": case_relaxed,
    "darkrank": case_darkrank, "hint": case_hint, "attention": case_attention, "contrastive": case_contrastive,
    "prototype": case_prototype,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_CASES))
def test_matches_loop_reference(name):
    for value, reference, leaves in REFERENCE_CASES[name]():
        torch.testing.assert_close(value, torch.as_tensor(reference, dtype=torch.float64))
        got = torch.autograd.grad(value, leaves)
        want = torch.autograd.grad(reference, leaves)
        for g, r in zip(got, want):
            assert torch.isfinite(g).all()
            torch.testing.assert_close(g, r)


@pytest.mark.parametrize("name", distill_loss_names())
def test_every_distill_loss_has_a_reference_test(name):
    assert name in REFERENCE_CASES, f"distillation loss {name!r} has no loop-reference case in this file"


# ---------------------------------------------------------------- absolute

def test_absolute_projection_is_trained_and_teacher_gets_no_grad():
    loss = AbsoluteLoss(5, 9)
    s = leaf(emb(B, 5, 30).float())
    t = emb(B, 9, 31).float().requires_grad_(True)
    loss(s, t)["absolute"].backward()
    assert loss.projection.weight.grad is not None and loss.projection.weight.grad.abs().sum() > 0
    assert s.grad is not None and t.grad is None
    assert AbsoluteLoss(5, 5).projection is None


def _teacher_with_common_direction(n=48, d=8, seed=32):
    g = _gen(seed)
    common = F.normalize(torch.randn(d, generator=g, dtype=torch.float64), dim=0)
    return F.normalize(1.2 * common + torch.randn(n, d, generator=g, dtype=torch.float64) / math.sqrt(d), dim=1)


def test_centred_absolute_raises_the_constant_plateau():
    t = _teacher_with_common_direction()
    assert F.normalize(t, dim=1).mean(0).norm() > 0.4  # the situation the centring is for
    plateau = AbsoluteLoss.constant_output_level(t)
    constant = F.normalize(t.mean(0, keepdim=True), dim=1).expand_as(t)
    # Plain loss: a constant student sits exactly at the plateau.
    torch.testing.assert_close(AbsoluteLoss(8, 8)(constant, t)["absolute"], plateau)

    centred = AbsoluteLoss(8, 8, center=True).double().train()
    at_constant = centred(constant, t)["absolute"]
    assert at_constant >= plateau + 0.2  # a constant output no longer looks good
    targets = F.normalize(t - t.mean(0), dim=1)  # first batch: the running mean is the batch mean
    centred.eval()
    torch.testing.assert_close(centred.centred_targets(t), targets)
    assert float(centred(targets, t)["absolute"]) == pytest.approx(0.0, abs=1e-12)
    # No constant unit vector does as well under centring: the best one is near sqrt(2).
    best_constant = F.normalize(targets.mean(0, keepdim=True), dim=1).expand_as(t)
    assert centred(best_constant, t)["absolute"] >= plateau + 0.2


def test_centred_absolute_running_mean_is_an_ema_updated_in_training_only():
    t1, t2 = _teacher_with_common_direction(seed=33), _teacher_with_common_direction(seed=34)
    loss = AbsoluteLoss(8, 8, center=True, momentum=0.9).double()
    s = emb(48, 8, 35)
    loss.train()
    loss(s, t1)
    torch.testing.assert_close(loss.running_mean, t1.mean(0))
    loss(s, t2)
    expected = 0.9 * t1.mean(0) + 0.1 * t2.mean(0)
    torch.testing.assert_close(loss.running_mean, expected)
    loss.eval()
    loss(s, t1)
    torch.testing.assert_close(loss.running_mean, expected)
    assert "running_mean" in loss.state_dict()


def test_absolute_zero_difference_has_finite_gradient():
    t = emb(B, D, 36)
    s = leaf(t)
    value = AbsoluteLoss(D, D)(s, t)["absolute"]
    (g,) = torch.autograd.grad(value, [s])
    assert float(value.detach()) == 0.0 and torch.isfinite(g).all()


# ---------------------------------------------------------------- relative

def test_relative_scale_grows_with_batch_size_and_normalised_does_not():
    def mean_value(n, normalize):
        return sum(float(RelativeLoss(normalize)(emb(n, 16, 100 + k), emb(n, 16, 200 + k))["relative"])
                   for k in range(3)) / 3

    plain_ratio = mean_value(64, False) / mean_value(8, False)
    norm_ratio = mean_value(64, True) / mean_value(8, True)
    assert plain_ratio > 4.0  # ~8 = 64 / 8: the seed's value grows linearly with N
    assert 0.6 < norm_ratio < 1.6


def test_relative_gradients_finite_at_zero_distances():
    t = emb(B, D, 40)
    s = leaf(t)  # identical: loss 0, and every diagonal distance is 0
    value = RelativeLoss()(s, t)["relative"]
    (g,) = torch.autograd.grad(value, [s])
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-6) and torch.isfinite(g).all()
    dup = emb(B, D, 41)
    dup[1] = dup[0]  # a zero off-diagonal distance as well
    s = leaf(dup)
    (g,) = torch.autograd.grad(RelativeLoss()(s, t)["relative"], [s])
    assert torch.isfinite(g).all()


def test_pairwise_distances_matches_cdist_with_zero_diagonal():
    e = emb(7, 4, 42)
    d = pairwise_distances(e)
    torch.testing.assert_close(d, torch.cdist(e, e) * (1 - torch.eye(7, dtype=e.dtype)))
    assert (d.diagonal() == 0).all()


# ---------------------------------------------------------------- rkd

def test_rkd_refuses_a_batch_too_large_for_the_angle_term():
    s, t = emb(10, D, 43), emb(10, D, 44)
    with pytest.raises(ConfigError, match=r"batch of 10.*angle_weight=0"):
        RKDLoss(max_angle_batch=8)(s, t)
    value = RKDLoss(angle_weight=0, max_angle_batch=8)(s, t)["rkd"]  # distance term only: fine
    assert torch.isfinite(value)


def test_rkd_terms_combine_with_their_weights():
    s, t = emb(B, D, 45), emb(B, D, 46)
    loss = RKDLoss(distance_weight=0.7, angle_weight=1.5)
    terms = loss.terms(s, t)
    torch.testing.assert_close(loss(s, t)["rkd"], 0.7 * terms["rkd_distance"] + 1.5 * terms["rkd_angle"])
    assert set(loss.last_terms) == {"rkd_distance", "rkd_angle"}


def test_darkrank_needs_more_than_permute_len_rows():
    with pytest.raises(ConfigError, match="permute_len"):
        DarkRankLoss(permute_len=4)(emb(4, D, 47), emb(4, D, 48))


# ---------------------------------------------------------------- spec parsing

@pytest.mark.parametrize("spec, expected", [
    ("relative:0.1", ("relative", 0.1, {})),
    ("rkd:1.0", ("rkd", 1.0, {})),
    ("absolute:1.0:center=true", ("absolute", 1.0, {"center": True})),
    ("rkd:1:angle_weight=0", ("rkd", 1.0, {"angle_weight": 0})),
    ("rkd:2:angle_weight=0,distance_weight=2.5,max_angle_batch=64",
     ("rkd", 2.0, {"angle_weight": 0, "distance_weight": 2.5, "max_angle_batch": 64})),
    ("relative:0.3:normalize=False", ("relative", 0.3, {"normalize": False})),
    ("attention:1:student_stages=-3/-2", ("attention", 1.0, {"student_stages": (-3, -2)})),
])
def test_parse_distill_spec(spec, expected):
    assert parse_distill_spec(spec) == expected


@pytest.mark.parametrize("spec", ["relative", "relative:", ":1", "relative:abc", "relative:1:center",
                                  "relative:1:=3", "relative:1:a=1,a=2", "relative:-1", "relative:nan"])
def test_parse_distill_spec_rejects_bad_syntax(spec):
    with pytest.raises(ConfigError, match=re.escape(repr(spec))):  # the message names the spec
        parse_distill_spec(spec)


def test_parse_distill_spec_names_the_expected_form():
    with pytest.raises(ConfigError, match=r"NAME:WEIGHT\[:key=value,\.\.\.\]"):
        parse_distill_spec("relative:abc")


@pytest.mark.parametrize("spec", ["nope:1", "triplet:1"])
def test_parse_distill_spec_unknown_names(spec):
    with pytest.raises(RegistryError, match="relative"):
        parse_distill_spec(spec)


# ---------------------------------------------------------------- WeightedSum

class RecordingTask:
    """A task loss that remembers which rows it saw."""

    def __call__(self, emb_, labels):
        self.rows = emb_.shape[0]
        self.labels = labels.clone()
        return {"fake_task": (emb_.pow(3).sum(1) * (labels.to(emb_.dtype) + 1)).mean()}


def test_weighted_sum_is_task_plus_weighted_terms():
    s, t = emb(B, D, 50), emb(B, D, 51)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    rel, rkd, ab = RelativeLoss(), RKDLoss(), AbsoluteLoss(D, D)
    objective = WeightedSum(RecordingTask(), [(0.5, rel), (2.0, rkd), (0.3, ab)])
    out = objective(s, labels, t)
    task = RecordingTask()(s, labels)["fake_task"]
    terms = {"relative": rel(s, t)["relative"], "rkd": rkd(s, t)["rkd"], "absolute": ab(s, t)["absolute"]}
    by_hand = task + 0.5 * terms["relative"] + 2.0 * terms["rkd"] + 0.3 * terms["absolute"]
    torch.testing.assert_close(out["loss"], by_hand)
    for name, value in terms.items():
        torch.testing.assert_close(out[name], value)  # logged unweighted
    torch.testing.assert_close(out["fake_task"], task)
    torch.testing.assert_close(out["task"], task)
    assert {"rkd_distance", "rkd_angle"} <= set(out)


def test_weighted_sum_task_sees_only_labeled_rows():
    s, t = emb(B, D, 52), emb(B, D, 53)
    labels = torch.tensor([3, 0, 1, 4, 2, 5])
    mask = torch.tensor([True, False, True, False, False, True])
    task = RecordingTask()
    objective = WeightedSum(task, [(1.5, RelativeLoss())])
    out = objective(s, labels, t, labeled_mask=mask)
    assert task.rows == 3 and task.labels.tolist() == [3, 1, 5]
    expected_task = RecordingTask()(s[mask], labels[mask])["fake_task"]
    torch.testing.assert_close(out["loss"], expected_task + 1.5 * RelativeLoss()(s, t)["relative"])

    task.rows = None
    out = objective(s, labels, t, labeled_mask=torch.zeros(B, dtype=torch.bool))
    assert task.rows is None  # never called without labeled rows
    assert float(out["task"]) == 0.0 and "fake_task" not in out
    torch.testing.assert_close(out["loss"], 1.5 * RelativeLoss()(s, t)["relative"])


def test_weighted_sum_without_task_loss_and_duplicate_names():
    s, t = emb(B, D, 54), emb(B, D, 55)
    out = WeightedSum(None, [(2.0, RelativeLoss())])(s, None, t)
    torch.testing.assert_close(out["loss"], 2.0 * out["relative"])
    assert "task" not in out
    with pytest.raises(ConfigError, match="relative"):
        WeightedSum(None, [(1.0, RelativeLoss()), (1.0, RelativeLoss(normalize=True))])


def test_weighted_sum_routes_feature_maps_to_each_loss():
    s, t = emb(B, D, 56), emb(B, D, 57)
    hint = HintLoss(4, 7, student_stage=1, teacher_stage=2).double()
    att = AttentionTransferLoss((0, 1), (1, 2))
    objective = WeightedSum(None, [(1.0, hint), (0.5, att), (0.25, RelativeLoss())])
    assert objective.student_stages == (0, 1) and objective.teacher_stages == (1, 2)
    s_maps = {0: _maps((B, 3, 4, 4), 58), 1: _maps((B, 4, 2, 2), 59)}
    t_maps = {1: _maps((B, 5, 2, 2), 60), 2: _maps((B, 7, 2, 2), 61)}
    out = objective(s, None, t, s_feats=s_maps, t_feats=t_maps)
    torch.testing.assert_close(out["hint"], hint(s, t, [s_maps[1]], [t_maps[2]])["hint"])
    torch.testing.assert_close(out["attention"], att(s, t, [s_maps[0], s_maps[1]], [t_maps[1], t_maps[2]])["attention"])
    as_lists = objective(s, None, t, s_feats=[s_maps[0], s_maps[1]], t_feats=[t_maps[1], t_maps[2]])
    torch.testing.assert_close(as_lists["loss"], out["loss"])
    with pytest.raises(ConfigError, match="needs feature maps"):
        objective(s, None, t)
    assert {n for n, _ in objective.named_parameters()} == {"losses.0.regressor.weight", "losses.0.regressor.bias"}


# ---------------------------------------------------------------- building from specs

def _fake_model(dim, channels):
    return SimpleNamespace(embedding_dim=dim, feature_info=[{"num_chs": c, "reduction": 2 ** (i + 1)}
                                                            for i, c in enumerate(channels)])


def test_build_distill_losses_takes_sizes_from_the_models():
    student, teacher = _fake_model(8, [4, 6, 10, 12]), _fake_model(16, [8, 12, 20, 24, 32])
    built = build_distill_losses(["absolute:1.0", "hint:0.5", "attention:0.2:student_stages=1/2,teacher_stages=2/3",
                                  "rkd:1:angle_weight=0"], student, teacher)
    (w_abs, ab), (w_hint, hint), (w_att, att), (w_rkd, rkd) = built
    assert (w_abs, w_hint, w_att, w_rkd) == (1.0, 0.5, 0.2, 1.0)
    assert ab.projection.weight.shape == (16, 8)
    assert hint.student_stages == (2,) and hint.teacher_stages == (3,)  # -2 resolved per network
    assert hint.regressor.in_channels == 10 and hint.regressor.out_channels == 24
    assert att.student_stages == (1, 2) and att.teacher_stages == (2, 3)
    assert rkd.angle_weight == 0.0
    assert isinstance(create_loss("relative"), RelativeLoss)


@pytest.mark.parametrize("spec, match", [
    ("absolute:1:student_dim=3", "taken from the models"),
    ("hint:1:student_stage=9", "stage 9 does not exist"),
    ("relative:1:foo=1", "valid options: normalize"),
    ("attention:1:student_stages=0/1,teacher_stages=1", "same length"),
])
def test_build_distill_losses_rejects_bad_options(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_distill_losses([spec], _fake_model(8, [4, 6, 10]), _fake_model(8, [4, 6, 10]))


def test_end_to_end_on_tiny_models():
    from mobile_distill.models import create_model

    torch.manual_seed(0)
    student = create_model("mobilenet_v1_025", embedding_dim=8, pretrained="none", image_size=32)
    teacher = create_model("mobilenet_v1_025", embedding_dim=12, pretrained="none", image_size=32).eval()
    objective = WeightedSum(None, build_distill_losses(
        ["absolute:1", "relative:0.1", "rkd:1", "relaxed:1", "darkrank:0.5", "hint:1", "attention:10"],
        student, teacher))
    x = torch.rand(B, 3, 32, 32)
    s_emb, s_maps = collect_features(student, x, objective.student_stages)
    with torch.no_grad():
        t_emb, t_maps = collect_features(teacher, x, objective.teacher_stages)
    out = objective(s_emb, None, t_emb, s_feats=s_maps, t_feats=t_maps)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    grads = [p.grad for p in list(student.parameters()) + list(objective.parameters()) if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------- contrastive, prototype


def test_contrastive_queue_is_a_fifo_filled_in_training_only():
    loss = ContrastiveLoss(D, D, queue=8).double()
    batches = [emb(B, D, 40 + i) for i in range(3)]
    loss.eval()
    loss(emb(B, D, 39), batches[0])
    assert int(loss.queue_size) == 0  # evaluation never enqueues
    loss.train()
    for t in batches:
        loss(emb(B, D, 39), t)
    assert int(loss.queue_size) == 8 and int(loss.queue_next) == (3 * B) % 8
    newest = torch.cat(batches)[-8:]  # the 8 newest keys, wherever the ring put them
    held = loss.queue_keys
    assert all(any(torch.allclose(k, F.normalize(v, dim=0)) for k in held) for v in newest)


def test_contrastive_of_a_student_equal_to_its_teacher_is_near_zero_and_refuses_bad_options():
    t = emb(16, D, 44)
    assert float(ContrastiveLoss(D, D, temperature=0.01)(t.clone(), t)["contrastive"]) < 1e-3
    for kwargs, match in (({"temperature": 0}, "temperature"), ({"queue": -1}, "queue"),
                          ({"hard": 4}, "hard negatives are mined in the queue")):
        with pytest.raises(ConfigError, match=match):
            ContrastiveLoss(D, D, **kwargs)


def test_prototype_needs_two_labelled_classes_and_labels():
    s = leaf(emb(B, D, 45))
    one_class = PrototypeLoss(D, D)(s, emb(B, D, 46), labels=torch.tensor([3, 3, -1, -1, -1, -1]))["prototype"]
    assert float(one_class) == 0.0 and torch.autograd.grad(one_class, s)[0].abs().sum() == 0
    with pytest.raises(ConfigError, match="labels"):
        PrototypeLoss(D, D)(s, emb(B, D, 46))


def test_weighted_sum_gives_label_reading_losses_the_labelled_rows_only():
    seen = {}

    class Spy(PrototypeLoss):
        def compute_loss(self, s_emb, t_emb, s_feats=None, t_feats=None, labels=None):
            seen["labels"] = labels.clone()
            return super().compute_loss(s_emb, t_emb, labels=labels)

    objective = WeightedSum(None, [(1.0, Spy(D, D))])
    labels, mask = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([True, True, True, True, False, False])
    objective(emb(B, D, 47), labels, emb(B, D, 48), labeled_mask=mask)
    assert seen["labels"].tolist() == [0, 0, 1, 1, -1, -1]
