"""Optimizers: AdamW over the model's parameter groups, and Sophia (SophiaG, SophiaH)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from mtbert.train.distributed import all_reduce_mean


def build_optimizer(
    name: str,
    model: nn.Module,
    heads: nn.Module,
    lr: float,
    head_lr: float,
    weight_decay: float,
    beta1: float | None = None,
    beta2: float | None = None,
    rho: float | None = None,
    hess_interval: int = 10,
    lr_scales: dict[int, float] | None = None,
) -> torch.optim.Optimizer:
    """AdamW, SophiaG or SophiaH (`name`) over the trainable parameters: the task heads at `head_lr`, the shared
    rest (encoder, pooling) at `lr`, times `lr_scales[id(parameter)]` where given (see layer_lr_scales). Betas and
    rho left None take the optimizer's defaults.

    Biases and LayerNorm weights (1-d tensors) get no weight decay, as in BERT.
    """
    head_ids = {id(p) for p in heads.parameters()}
    scales = lr_scales or {}
    groups: dict[tuple[bool, bool, float], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in head_ids, p.ndim >= 2, scales.get(id(p), 1.0)), []).append(p)
    param_groups = [
        {"params": ps, "lr": (head_lr if in_head else lr) * scale, "weight_decay": weight_decay if decayed else 0.0}
        for (in_head, decayed, scale), ps in groups.items()
    ]
    if name == "adamw":
        on_gpu = all(p.is_cuda for group in param_groups for p in group["params"])
        kernel = {"fused": True} if on_gpu else {"foreach": True}  # fused: one kernel for all parameters on CUDA
        return torch.optim.AdamW(param_groups, lr=lr, betas=(beta1 or 0.9, beta2 or 0.999), **kernel)
    sophia = {"sophiag": SophiaG, "sophiah": SophiaH}[name]
    kwargs = {"betas": (beta1 or 0.965, beta2 or 0.99), "hess_interval": hess_interval}
    return sophia(param_groups, lr=lr, **kwargs, **({"rho": rho} if rho is not None else {}))


def layer_lr_scales(encoders: list[nn.Module], extra_embeddings: nn.Module | None, decay: float) -> dict[int, float]:
    """Layer-wise learning-rate decay (--layer_lr_decay; Howard & Ruder 2018, Sun et al. 2019): parameter id -> the
    factor of its lr, decay ** (the number of layers above it). The top layer trains at lr, each layer below at
    `decay` times the one above, the embeddings (and `extra_embeddings`, the tag embeddings) lowest at decay ** L.
    What is not in a layer or the embeddings (poolers, heads) keeps its lr. decay 1: every factor is 1."""
    scales: dict[int, float] = {}
    for encoder in encoders:  # (BertEncoder: emb, then layers bottom to top)
        n = len(encoder.layers)
        for i, layer in enumerate(encoder.layers):
            scales |= dict.fromkeys(map(id, layer.parameters()), decay ** (n - 1 - i))
        scales |= dict.fromkeys(map(id, encoder.emb.parameters()), decay**n)
        if extra_embeddings is not None:
            scales |= dict.fromkeys(map(id, extra_embeddings.parameters()), decay**n)
    return scales


# --- Sophia (Liu et al., 2023, "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model Pre-training")
#
# Sophia keeps two EMAs per parameter: m of the gradient (beta1) and h of a diagonal Hessian estimate (beta2), the
# latter refreshed only every `hess_interval` steps. Its update is a Newton step m / (rho * h) clipped per coordinate
# to [-1, 1] and scaled by lr:
#
#     theta <- theta - lr * wd * theta - lr * sign(m) * min(|m| / (rho * max(h, 0) + eps), 1)
#
# so no coordinate ever moves by more than lr (plus its weight decay). rho (the paper's gamma) sets where clipping
# starts: coordinates with |m| >= rho * h take a sign step of lr; flat ones (h ~ 0) always do; sharp ones take the
# smaller Newton step lr * m / (rho * h). Hutchinson estimates can be negative (the loss is not convex), and a
# negative curvature must not flip the step, hence max(h, 0): such a coordinate takes the sign step.
#
# Both estimators estimate the diagonal Hessian (or Gauss-Newton matrix) of the mean training loss, so rho does not
# depend on the batch size: the batch size B enters the GNB estimate as the factor B of B * g_hat * g_hat
# (Algorithm 2), which makes that estimate unbiased (see gauss_newton_bartlett), and the Hutchinson estimate of the
# mean loss needs no factor. A larger batch only lowers the estimates' variance.


def hutchinson(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    """Hutchinson's estimate u * (H u) of diag(H), H the Hessian of `loss`, with Rademacher u (E[u u^T] = I).

    One Hessian-vector product: the gradient is taken with create_graph=True (only here, on the steps that refresh
    the estimate), then differentiated again along u. The graph of `loss` is kept for the usual backward.
    """
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    used = [i for i, g in enumerate(grads) if g is not None]
    us = [torch.randint_like(grads[i], 2) * 2 - 1 for i in used]  # Rademacher: +-1 with equal probability
    hvps = torch.autograd.grad([grads[i] for i in used], [params[i] for i in used], us, retain_graph=True)
    estimates: list[torch.Tensor | None] = [None] * len(params)
    for i, u, hu in zip(used, us, hvps, strict=True):
        estimates[i] = u * hu
    return estimates


def gauss_newton_bartlett(sampled_loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    """The Gauss-Newton-Bartlett estimate g * g, g the gradient of `sampled_loss`.

    `sampled_loss` is the loss against labels drawn from the model's own predictive distribution, summed over the
    B examples and divided by sqrt(B) (that is sqrt(B) times the mean loss, so g * g = B * g_mean * g_mean as in
    Algorithm 2). By Bartlett's identity the per-example gradients then have mean zero and covariance equal to the
    Gauss-Newton matrix J^T H_out J, so the cross terms vanish in expectation and E[g * g] is the diagonal of the
    Gauss-Newton matrix of the mean loss. Several tasks' sampled losses can simply be added: their cross terms vanish
    too, and the estimate is then that of the summed losses. The graph is kept for the usual backward.
    """
    grads = torch.autograd.grad(sampled_loss, params, retain_graph=True, allow_unused=True)
    return [None if g is None else g * g for g in grads]


class Sophia(torch.optim.Optimizer):
    """Sophia's update (see above) with the diagonal Hessian estimator `estimator`; use SophiaG or SophiaH.

    The training loop calls `update_hessian(loss)` before `loss.backward()` on the steps where `hessian_due()`:
    the first step and every `hess_interval`-th step after it.
    """

    estimator: Callable[[torch.Tensor, list[nn.Parameter]], list[torch.Tensor | None]]

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 0.0,
        hess_interval: int = 10,
        eps: float = 1e-12,
    ):
        if lr < 0 or rho <= 0 or weight_decay < 0 or eps <= 0:
            raise ValueError(
                f"Sophia needs lr >= 0, rho > 0, weight_decay >= 0 and eps > 0; got {lr}, {rho}, {weight_decay}, {eps}"
            )
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Sophia's betas must lie in [0, 1), got {betas}")
        if hess_interval < 1:
            raise ValueError(f"hess_interval must be at least 1, got {hess_interval}")
        # the step count lives in the param groups, so that state_dict() saves it with them
        defaults = {
            "lr": lr,
            "betas": betas,
            "rho": rho,
            "weight_decay": weight_decay,
            "eps": eps,
            "hess_interval": hess_interval,
            "step": 0,
        }
        super().__init__(params, defaults)
        self._refresh = False

    def hessian_due(self) -> bool:
        """Whether this step refreshes the Hessian estimate: the first step and every hess_interval-th after it,
        and the step after `refresh_hessian`."""
        group = self.param_groups[0]
        return group["step"] % group["hess_interval"] == 0 or self._refresh

    def refresh_hessian(self) -> None:
        """Makes the next step refresh the Hessian estimate (parameters that start training, see --unfreeze_interval,
        then have one from their first step)."""
        self._refresh = True

    def _state(self, p: nn.Parameter) -> dict:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def update_hessian(self, loss: torch.Tensor) -> None:
        """h <- beta2 h + (1 - beta2) h_hat, with h_hat the estimator's diagonal estimate from `loss`."""
        params = [p for group in self.param_groups for p in group["params"] if p.requires_grad]
        estimates = type(self).estimator(loss, params)
        # under DDP each rank estimated from its own share of the batch: average, so that every rank keeps the same h
        all_reduce_mean([e for e in estimates if e is not None])
        estimates = iter(estimates)
        self._refresh = False
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.requires_grad and (estimate := next(estimates)) is not None:
                        self._state(p)["hessian"].lerp_(estimate, 1 - group["betas"][1])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["step"] += 1
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            ms, hs = [s["exp_avg"] for s in states], [s["hessian"] for s in states]
            lr, rho, eps, (beta1, _) = group["lr"], group["rho"], group["eps"], group["betas"]
            torch._foreach_lerp_(ms, [p.grad for p in params], 1 - beta1)  # m <- beta1 m + (1 - beta1) g
            if group["weight_decay"] != 0:
                torch._foreach_mul_(params, 1 - lr * group["weight_decay"])  # decoupled weight decay
            denominators = torch._foreach_add(torch._foreach_mul(torch._foreach_clamp_min(hs, 0.0), rho), eps)
            ratios = torch._foreach_div(torch._foreach_abs(ms), denominators)  # |m| / (rho max(h, 0) + eps)
            torch._foreach_clamp_max_(ratios, 1.0)  # the per-coordinate clip
            torch._foreach_addcmul_(params, torch._foreach_sign(ms), ratios, value=-lr)
        return loss


class SophiaH(Sophia):
    """Sophia with Hutchinson's estimator: update_hessian(loss) takes the training loss itself."""

    estimator = staticmethod(hutchinson)

    def __init__(self, params, lr: float, rho: float = 0.01, **kwargs):
        super().__init__(params, lr, rho=rho, **kwargs)


class SophiaG(Sophia):
    """Sophia with the Gauss-Newton-Bartlett estimator: update_hessian(loss) takes the loss against labels sampled
    from the model's predictions, scaled as gauss_newton_bartlett says."""

    estimator = staticmethod(gauss_newton_bartlett)

    def __init__(self, params, lr: float, rho: float = 0.05, **kwargs):
        super().__init__(params, lr, rho=rho, **kwargs)
