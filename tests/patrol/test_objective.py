"""The PATROL objective: Lipschitz estimates as specified, gradient reversal, all terms in one pass."""

from __future__ import annotations

import pytest
import torch

from patrol_deploy.config import PatrolConfig
from patrol_deploy.errors import ConfigError
from patrol_deploy.models import BlockNet
from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.patrol.objective import PatrolNet, alphas, grad_reverse, lipschitz_terms
from patrol_deploy.patrol.trainer import surrogate_decoder
from patrol_deploy.split import cut


def test_lipschitz_terms_match_the_definition() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    delta = torch.randn(5, 3) * 0.1
    f1 = lambda t: 2.0 * t  # noqa: E731 - k_1 = 2 exactly
    f2 = lambda t: 0.25 * t  # noqa: E731 - k_2 = 0.25 exactly
    clean = [f1(x), f2(f1(x))]
    pert = [f1(x + delta), f2(f1(x + delta))]
    k = lipschitz_terms(clean, pert, delta, "mean")
    torch.testing.assert_close(torch.stack(k), torch.tensor([2.0, 0.25]))
    # a non-uniform block: the max over the batch is at least the mean
    g = lambda t: t * torch.arange(1, 6).float()[:, None]  # noqa: E731 - per-sample gain 1..5
    kmax = lipschitz_terms([g(x)], [g(x + delta)], delta, "max")[0]
    kmean = lipschitz_terms([g(x)], [g(x + delta)], delta, "mean")[0]
    assert kmax.item() == pytest.approx(5.0, rel=1e-5) and kmean.item() == pytest.approx(3.0, rel=1e-5)


def test_grad_reverse_flips_and_scales() -> None:
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 4.0).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -4.0))


def test_alpha_list_must_match_blocks() -> None:
    cfg = PatrolConfig.model_validate({"lipschitz": {"alpha": [0.1, 0.2]}})
    assert alphas(cfg, 2) == [0.1, 0.2]
    with pytest.raises(ConfigError, match="2 weights but the edge has 3 blocks"):
        alphas(cfg, 3)


def test_patrol_net_all_terms_and_adversarial_sign(model_copy: BlockNet) -> None:
    cfg = PatrolConfig()
    x = torch.randn(8, 1, 16, 16)
    y = torch.randint(0, 10, (8,))
    masks = SoftMasks(model_copy, cut(model_copy, "layer2")[0])
    decoder = surrogate_decoder(model_copy, "layer2", x)
    net = PatrolNet(model_copy, "layer2", cfg, decoder, masks)
    net.eval()  # batch-norm on running stats, so the features do not depend on the perturbed half of the batch
    losses = net(x, y)
    for k in ("task", "lipschitz", "adversarial", "sparsity"):
        assert losses[k].item() > 0, k
    assert losses["features"].shape[1:] == cut(model_copy, "layer2")[0](x).shape[1:]
    # The decoder is trained to *reduce* reconstruction error while the edge gets the reversed gradient:
    edge_w = model_copy.blocks["stem"][0].weight
    losses["adversarial"].backward(retain_graph=True)
    g_rev = edge_w.grad.clone()
    model_copy.zero_grad()
    decoder.zero_grad()
    z = cut(model_copy, "layer2")[0](x)
    torch.nn.functional.mse_loss(decoder(z), x).backward()
    torch.testing.assert_close(g_rev, -cfg.adversarial.beta * edge_w.grad, rtol=1e-4, atol=1e-6)


def test_switches_turn_terms_off(model_copy: BlockNet) -> None:
    cfg = PatrolConfig.model_validate({"lipschitz": {"enabled": False}, "adversarial": {"enabled": False}})
    net = PatrolNet(model_copy, "layer1", cfg, None, None)
    losses = net(torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,)))
    assert losses["lipschitz"].item() == 0 and losses["adversarial"].item() == 0 and losses["sparsity"].item() == 0
    torch.testing.assert_close(losses["total"], losses["task"])


def test_distillation_pulls_the_student_to_the_frozen_teacher(model_copy: BlockNet) -> None:
    import copy

    cfg = PatrolConfig.model_validate({"lipschitz": {"enabled": False}, "adversarial": {"enabled": False}})
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    teacher = copy.deepcopy(model_copy).eval().requires_grad_(False)
    same = PatrolNet(copy.deepcopy(model_copy).eval(), "layer1", cfg, None, None, teacher=teacher)
    assert same(x, y)["distill"].item() == pytest.approx(0.0, abs=1e-5)  # identical outputs: KL 0
    student = copy.deepcopy(model_copy).eval()
    with torch.no_grad():
        student.head.fc.weight.mul_(-1.0)  # outputs that disagree with the teacher's
    net = PatrolNet(student, "layer1", cfg, None, None, teacher=teacher)
    losses = net(x, y)
    temp = cfg.distill.temperature
    with torch.no_grad():  # KL(teacher || student) on softened outputs, times T^2 (Hinton et al.)
        p_t = torch.softmax(teacher(x) / temp, dim=1)
        expected = (p_t * (p_t.log() - torch.log_softmax(student(x) / temp, dim=1))).sum(1).mean() * temp * temp
    torch.testing.assert_close(losses["distill"].detach(), cfg.distill.weight * expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(losses["total"], losses["task"] + losses["distill"])
    losses["distill"].backward()
    assert student.head.fc.weight.grad is not None
    assert not any(k.startswith("teacher") for k in net.state_dict())  # never saved with the PATROL model
    assert all(not k.startswith("teacher") for k, _ in net.named_parameters())  # nor trained or wrapped by DDP
    off = PatrolNet(student, "layer1", cfg.model_copy(update={"distill": cfg.distill.model_copy(
        update={"enabled": False})}), None, None, teacher=teacher)
    assert off(x, y)["distill"].item() == 0
