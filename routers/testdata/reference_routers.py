"""Independent float64 PyTorch references of moelab's routers.

Written from the router conventions (the contract the C++ routers follow) and
the papers' summaries in ../shared/papers/, without reading the C++ code, so
that routers/reference_test.cc compares two independent readings of the
contract. Run with Debian's /usr/bin/python3 (torch 1.13).

Every router takes float32 inputs, computes in float64 and returns a dict with
  logits, gate_probs, aggregated_probs (graph-of-tokens routers only),
  selected [B, T, E] bool, combine_weights [B, T, E], dropped [B, T] bool
  (token_choice only), choices [B, T, E] bool (token_choice only: the top-k
  choices before capacity, for the load-balance loss), and for the
  graph-of-tokens routers the description of the token-to-token weights W of
  p_i = sum_j W_ij r_j: aggregation_self_weight [B, T] (W_ii),
  aggregation_effective_neighbours [B, T] (exp of the row entropy) and, for
  attention_aware, aggregation_head [B, T] int64 (the C++ routers report
  these only outside training; make_fixtures.py leaves them out of training
  cases)
in float64/bool/int64. Selections never depend on how ties are broken: every top-k,
top-c, capacity cut and head choice records its margin through `Margins`, and
make_fixtures.py redraws a case whose margin is too small.
"""

import math

import torch


class Margins:
    """Smallest relative gap seen at any selection boundary since reset()."""

    smallest = math.inf

    @classmethod
    def reset(cls):
        cls.smallest = math.inf

    @classmethod
    def record(cls, above, below):
        # above/below: tensors of the values on either side of a boundary.
        above = above.double()
        below = below.double()
        scale = torch.maximum(above.abs(), below.abs()).clamp_min(1e-12)
        gap = ((above - below) / scale).min().item()
        cls.smallest = min(cls.smallest, gap)


def topk_mask(scores, k, dim=-1, ordered=False):
    """Bool mask of the k largest entries of `scores` along `dim`.

    Records the gap between the k-th and (k+1)-th values; with `ordered`, also
    the gaps between consecutive chosen values (their rank order matters).
    """
    n = scores.size(dim)
    assert 0 <= k <= n, (k, n)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k == 0:
        return mask
    values, indices = scores.sort(dim=dim, descending=True)
    mask.scatter_(dim, indices.narrow(dim, 0, k), True)
    if k < n:
        Margins.record(values.narrow(dim, k - 1, 1), values.narrow(dim, k, 1))
    if ordered:
        for i in range(min(k, n - 1)):
            Margins.record(values.narrow(dim, i, 1),
                           values.narrow(dim, i + 1, 1))
    return mask


def argmin_checked(values, dim, matters=None):
    """argmin along `dim`, recording the gap to the second smallest value
    where `matters` (values' shape without `dim`) is true."""
    if values.size(dim) > 1:
        sorted_values = values.sort(dim=dim).values
        lowest = sorted_values.narrow(dim, 0, 1).squeeze(dim)
        second = sorted_values.narrow(dim, 1, 1).squeeze(dim)
        if matters is not None:
            lowest, second = lowest[matters], second[matters]
        if lowest.numel():
            # Negated so that "above" is the larger of the two.
            Margins.record(-lowest, -second)
    return values.argmin(dim=dim)


def head_choice_margins(entropy):
    """Records, for each token, the gap between its lowest and second-lowest
    head entropy ([B, H, T]); exact ties (e.g. every head one-hot on the
    first token of a causal sequence) go to the lower index in both
    implementations and are not recorded."""
    if entropy.size(1) > 1:
        ordered = entropy.sort(dim=1).values
        lowest, second = ordered[:, 0], ordered[:, 1]
        differ = second > lowest
        if differ.any():
            Margins.record(-lowest[differ], -second[differ])


def describe_aggregation(weights):
    """W [B, T, T] (rows sum to one) -> self-weight W_ii and exp(H(W_i)),
    with 0 log 0 = 0."""
    w = weights.double()
    plogp = torch.where(w > 0, w * w.clamp_min(1e-300).log(),
                        torch.zeros_like(w))
    return dict(aggregation_self_weight=w.diagonal(dim1=1, dim2=2),
                aggregation_effective_neighbours=(-plogp.sum(-1)).exp())


def gate_logits(hidden, gate_weight):
    # [B, T, D] @ [D, E] -> [B, T, E]
    return hidden.double() @ gate_weight.double().t()


def apply_gate(logits, gate):
    if gate == "SOFTMAX":
        return logits.softmax(-1)
    if gate == "SIGMOID":
        return logits.sigmoid()
    raise ValueError(gate)


def lround(x):
    """std::lround for x >= 0: halves round away from zero."""
    assert x >= 0
    return int(math.floor(x + 0.5))


def renormalise(combine):
    return combine / combine.sum(-1, keepdim=True)


# ---------------------------------------------------------------- token_choice

def token_choice(hidden, gate_weight, k, gate="SOFTMAX", renormalize=False,
                 capacity_factor=0.0, drop_policy="DROP_BY_SCORE"):
    """Top-k per token; optional per-expert capacity over the batch's tokens.

    jitter_eps is not modelled (it is random): fixtures use jitter_eps = 0.
    """
    logits = gate_logits(hidden, gate_weight)
    r = apply_gate(logits, gate)
    B, T, E = r.shape
    # The rank order of a token's choices matters only for DROP_BY_POSITION.
    selected = topk_mask(r, k, ordered=capacity_factor > 0)
    combine = r * selected
    if renormalize:
        combine = renormalise(combine)
    dropped = torch.zeros(B, T, dtype=torch.bool)
    choices = selected

    if capacity_factor > 0:
        N = B * T
        capacity = math.ceil(capacity_factor * N * k / E)
        flat_r = r.reshape(N, E)
        flat_selected = selected.reshape(N, E)
        # rank[n, e] = 0 for token n's highest-r expert, 1 for the next ...
        rank = flat_r.argsort(-1, descending=True).argsort(-1)
        keep = torch.zeros(N, E, dtype=torch.bool)
        for e in range(E):
            tokens = flat_selected[:, e].nonzero().flatten().tolist()
            if drop_policy == "DROP_BY_SCORE":
                tokens.sort(key=lambda n: -flat_r[n, e].item())
                if len(tokens) > capacity:
                    Margins.record(flat_r[tokens[capacity - 1], e],
                                   flat_r[tokens[capacity], e])
            elif drop_policy == "DROP_BY_POSITION":
                # All 1st choices before any 2nd choice, then position b*T+t.
                tokens.sort(key=lambda n: (rank[n, e].item(), n))
            else:
                raise ValueError(drop_policy)
            keep[tokens[:capacity], e] = True
        dropped = (flat_selected & ~keep).any(-1).reshape(B, T)
        selected = keep.reshape(B, T, E)
        # Kept weights are not renormalised again after dropping.
        combine = combine * selected

    return dict(logits=logits, gate_probs=r, selected=selected,
                combine_weights=combine, dropped=dropped, choices=choices)


def token_choice_capacity(capacity_factor, num_tokens, k, num_experts):
    return capacity_factor * num_tokens * k / num_experts


# --------------------------------------------------------------- expert_choice

def expert_choice(hidden, gate_weight, k, capacity_factor=1.0):
    """Within each sequence, each expert takes its top-c tokens by r[b, :, e]."""
    logits = gate_logits(hidden, gate_weight)
    r = logits.softmax(-1)
    B, T, E = r.shape
    c = min(T, math.ceil(capacity_factor * T * k / E))
    selected = topk_mask(r, c, dim=1)
    return dict(logits=logits, gate_probs=r, selected=selected,
                combine_weights=r * selected)


# --------------------------------------------------------------------- unified

def _scope_groups(x, scope):
    """[B, T, E] -> [G, M, E]: the G selection groups of M tokens each."""
    B, T, E = x.shape
    if scope == "PER_SEQUENCE":
        return x
    if scope == "PER_BATCH":
        return x.reshape(1, B * T, E)
    if scope == "PER_POSITION":
        return x.transpose(0, 1)  # [T, B, E]
    raise ValueError(scope)


def _scope_ungroup(g, scope, B, T):
    E = g.size(-1)
    if scope == "PER_SEQUENCE":
        return g
    if scope == "PER_BATCH":
        return g.reshape(B, T, E)
    return g.transpose(0, 1)


def unified(hidden, gate_weight, k, alpha=0.5, beta=0.5,
            token_score="SIGMOID_SCALED", scope="PER_SEQUENCE"):
    """USMoE: top-c of alpha * tc + beta * ec over each scope's token x expert
    matrix, c = round(M * k) for the scope's M tokens."""
    logits = gate_logits(hidden, gate_weight)
    B, T, E = logits.shape
    tc = logits.softmax(-1)
    if token_score == "SIGMOID_SCALED":
        ec = logits.sigmoid() * 2.0 / E
    elif token_score == "SOFTMAX_OVER_TOKENS":
        # Softmax over the token axis of the scope's matrix, per expert.
        ec = _scope_ungroup(_scope_groups(logits, scope).softmax(1), scope, B, T)
    else:
        raise ValueError(token_score)
    score = alpha * tc + beta * ec

    groups = _scope_groups(score, scope)  # [G, M, E]
    G, M, _ = groups.shape
    c = min(max(lround(M * k), 1), M * E)
    flat = groups.reshape(G, M * E)  # index m*E + e
    selected = topk_mask(flat, c).reshape(G, M, E)
    selected = _scope_ungroup(selected, scope, B, T)
    return dict(logits=logits, gate_probs=tc, selected=selected,
                combine_weights=score * selected)


# ------------------------------------------------------------ similarity_aware

def _select_on_p(p, k, renormalize):
    selected = topk_mask(p, k)
    combine = p * selected
    if renormalize:
        combine = renormalise(combine)
    return selected, combine


# tau when none is given: 1 for the paper's raw dot products, 0.1 (as the
# float32 a proto field holds) on unit vectors (moelab's own default).
DEFAULT_TEMPERATURE = {"RAW_DOT_PRODUCT": 1.0,
                       "COSINE_SIMILARITY": float(torch.tensor(0.1))}


def similarity_aware(hidden, gate_weight, k, temperature=None,
                     scale="COSINE_SIMILARITY", causal=False, gate="SOFTMAX",
                     renormalize=False, padding_mask=None):
    """p_i = sum_j S_ij r_j with S = row-softmax(u_i . u_j / tau), W_s = I;
    with scale COSINE_SIMILARITY the u_i are first scaled to unit length."""
    u = hidden.double()
    if scale == "COSINE_SIMILARITY":
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    elif scale != "RAW_DOT_PRODUCT":
        raise ValueError(scale)
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE[scale]
    logits = gate_logits(hidden, gate_weight)
    r = apply_gate(logits, gate)
    B, T, _ = u.shape
    scores = u @ u.transpose(1, 2) / temperature  # [B, T(i), T(j)]
    allowed = torch.ones(B, T, T, dtype=torch.bool)
    if causal:
        allowed &= torch.ones(T, T, dtype=torch.bool).tril()
    if padding_mask is not None:
        # Only real tokens j are aggregated; rows of padded i are kept as
        # they are (the contract does not mask them), so fixtures pad on the
        # right and every row keeps j = 0.
        allowed &= padding_mask.bool()[:, None, :]
    S = scores.masked_fill(~allowed, -math.inf).softmax(-1)
    p = S @ r
    selected, combine = _select_on_p(p, k, renormalize)
    return dict(logits=logits, gate_probs=r, aggregated_probs=p,
                selected=selected, combine_weights=combine,
                **describe_aggregation(S))


# ------------------------------------------------------------- attention_aware

def attention_posterior(hidden, attention_probs, attention_values, sigma,
                        likelihood_scale="RELATIVE"):
    """A^p_h[i, j] proportional to A_h[i, j] N(u_i; V_h[j], s_i^2 I), with
    s_i = sigma (ABSOLUTE, the paper's formula) or sigma ||u_i|| (RELATIVE).

    hidden [B, T, D], attention_probs [B, H, T, T], attention_values
    [B, H, T, D] -> posterior [B, H, T, T] and its row entropies [B, H, T].
    """
    u = hidden.double()
    A = attention_probs.double()
    V = attention_values.double()
    # ||u_i - V_h[j]||^2: [B, 1, T(i), 1, D] - [B, H, 1, T(j), D]
    sq = ((u[:, None, :, None, :] - V[:, :, None, :, :]) ** 2).sum(-1)
    variance = sigma * sigma * torch.ones(u.shape[:2], dtype=u.dtype)  # [B, T]
    if likelihood_scale == "RELATIVE":
        variance = variance * (u * u).sum(-1).clamp_min(1e-12)
    elif likelihood_scale != "ABSOLUTE":
        raise ValueError(likelihood_scale)
    # -inf where A = 0
    log_likelihood = A.log() - sq / (2.0 * variance[:, None, :, None])
    posterior = log_likelihood.softmax(-1)  # exp(-inf) = 0: never NaN
    plogp = torch.where(posterior > 0, posterior * posterior.log(),
                        torch.zeros_like(posterior))
    entropy = -plogp.sum(-1)
    return posterior, entropy


def attention_aware(hidden, gate_weight, attention_probs, attention_values, k,
                    sigma=1.0, likelihood_scale="RELATIVE",
                    head_selection="LOWEST_ENTROPY", gate="SOFTMAX",
                    renormalize=False):
    logits = gate_logits(hidden, gate_weight)
    r = apply_gate(logits, gate)
    posterior, entropy = attention_posterior(hidden, attention_probs,
                                             attention_values, sigma,
                                             likelihood_scale)
    B, H, T, _ = posterior.shape
    per_head = posterior @ r[:, None]  # [B, H, T, E]: sum_j A^p_h[i, j] r_j
    if head_selection == "LOWEST_ENTROPY":
        # A tie matters only where the heads aggregate differently (not, e.g.,
        # at token 0 under causal attention, where every head has A^p = 1).
        spread = (per_head.amax(1) - per_head.amin(1)).amax(-1)  # [B, T]
        head = argmin_checked(entropy, dim=1, matters=spread > 1e-9)  # [B, T]
        # The reported head is compared too.
        head_choice_margins(entropy)
        p = per_head.gather(1, head[:, None, :, None].expand(B, 1, T, per_head.size(-1)))
        p = p[:, 0]
        weights = posterior.gather(
            1, head[:, None, :, None].expand(B, 1, T, T))[:, 0]
    elif head_selection == "LOWEST_MEAN_ENTROPY":
        seq_head = argmin_checked(entropy.mean(-1), dim=1)  # [B]
        p = per_head[torch.arange(B), seq_head]
        weights = posterior[torch.arange(B), seq_head]
        head = seq_head[:, None].expand(B, T)
    elif head_selection == "ALL_HEADS_WEIGHTED":
        weight = (-entropy).softmax(1)  # [B, H, T], over heads
        p = (weight[..., None] * per_head).sum(1)
        weights = (weight[..., None] * posterior).sum(1)
        # The reported head: the largest weight, i.e. the lowest entropy.
        head = entropy.argmin(1)
        head_choice_margins(entropy)
    else:
        raise ValueError(head_selection)
    selected, combine = _select_on_p(p, k, renormalize)
    return dict(logits=logits, gate_probs=r, aggregated_probs=p,
                selected=selected, combine_weights=combine,
                aggregation_head=head.long(), **describe_aggregation(weights))


# ------------------------------------------------------------------------ xmoe

def xmoe(hidden, projection, expert_embeddings, temperature, k):
    """X-MoE cosine router: cos(normalised projection, normalised expert
    embedding) / max(temperature, 0.01)."""
    z = hidden.double() @ projection.double().t()  # [B, T, P]
    z = z / z.norm(dim=-1, keepdim=True)
    emb = expert_embeddings.double()
    emb = emb / emb.norm(dim=-1, keepdim=True)
    logits = z @ emb.t() / max(float(temperature), 0.01)
    r = logits.softmax(-1)
    selected = topk_mask(r, k)
    return dict(logits=logits, gate_probs=r, selected=selected,
                combine_weights=r * selected)


# -------------------------------------------------------------------- sinkhorn

def sinkhorn_balance(logits, iterations, row_first=True):
    """Alternating row (per token) and column (per expert) normalisation of
    exp(logits) [N, E]; one iteration normalises rows, then columns (Megatron's
    order) or, with row_first=False, columns then rows. Uniform scale factors
    (1/N, 1/E) and a subtracted maximum change no per-token ranking."""
    m = (logits - logits.max()).exp()
    for _ in range(iterations):
        if row_first:
            m = m / m.sum(1, keepdim=True)
            m = m / m.sum(0, keepdim=True)
        else:
            m = m / m.sum(0, keepdim=True)
            m = m / m.sum(1, keepdim=True)
    return m


def sinkhorn(hidden, gate_weight, k, training, iterations=8, row_first=True,
             record_margins=True):
    """BASE/Megatron-style router. gate_probs is not returned: the contract
    does not define it for this router."""
    logits = gate_logits(hidden, gate_weight)
    B, T, E = logits.shape
    if training:
        balanced = sinkhorn_balance(logits.reshape(B * T, E), iterations,
                                    row_first)
        choice_scores = balanced.reshape(B, T, E)
    else:
        choice_scores = logits
    if record_margins:
        selected = topk_mask(choice_scores, k)
    else:
        selected = torch.zeros_like(choice_scores, dtype=torch.bool)
        selected.scatter_(-1, choice_scores.topk(k, -1).indices, True)
    return dict(logits=logits, selected=selected,
                combine_weights=logits.sigmoid() * selected)


# ---------------------------------------------------------- auxiliary losses

def load_balance_loss(gate_probs, counted, scores="NORMALIZED_OVER_EXPERTS"):
    """E * sum_e f_e P_e over all tokens (Switch/Megatron-Core; GShard counts
    only each token's first choice in f_e).

    f_e: share of the (token, expert) pairs in `counted` that went to e (the
    caller passes the top-k choices before capacity, or the pairs kept after
    it). P_e: mean over tokens of r_e / sum_e' r_e' (NORMALIZED_OVER_EXPERTS)
    or of the raw gate r_e (RAW_GATE)."""
    E = gate_probs.size(-1)
    g = gate_probs.reshape(-1, E).double()
    if scores == "NORMALIZED_OVER_EXPERTS":
        g = g / g.sum(-1, keepdim=True)
    elif scores != "RAW_GATE":
        raise ValueError(scores)
    s = counted.reshape(-1, E).double()
    f = s.sum(0) / s.sum()
    P = g.mean(0)
    return E * (f * P).sum()


def load_balance_counted(out, counting="CHOICES_BEFORE_CAPACITY"):
    """The pairs f_e counts: a router's choices before capacity where it has
    a capacity stage (token_choice), otherwise its selection."""
    if counting == "CHOICES_BEFORE_CAPACITY":
        return out.get("choices", out["selected"])
    if counting == "PAIRS_AFTER_CAPACITY":
        return out["selected"]
    raise ValueError(counting)


def router_z_loss(logits):
    E = logits.size(-1)
    return (logits.reshape(-1, E).double().logsumexp(-1) ** 2).mean()
