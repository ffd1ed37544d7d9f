"""Writes the router reference fixtures read by routers/reference_test.cc.

  cd routers/testdata && /usr/bin/python3 make_fixtures.py

For each case: fixtures/<case>.pt, a torch.save'd dict of float32/int64/bool
tensors (inputs, the flags `training` and `causal_model`, and the outputs of
reference_routers.py prefixed `expected_`), and fixtures/<case>.pbtxt, the
RouterSpec in text format. Inputs come from a fixed seed per case; a draw is
rejected (and the next seed tried) when any selection boundary of the
reference is closer than MIN_RELATIVE_MARGIN, so float32 rounding in C++
cannot flip a choice, or when the case would not tell the alternatives it is
meant to separate apart (e.g. the two drop policies). Running it again
rewrites identical files.
"""

import math
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_routers as ref  # noqa: E402

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
MIN_RELATIVE_MARGIN = 1e-3
MAX_TRIES = 500
BASE_SEED = 20240611


def f32(x):
    """The float32 value a proto float field holds."""
    return float(torch.tensor(x, dtype=torch.float32))


# ------------------------------------------------------------------ inputs

def draw_inputs(gen, c):
    """Random float32 inputs for case `c` (a dict, see CASES)."""
    B, T, D, E = c["B"], c["T"], c["D"], c["E"]
    hidden = torch.randn(B, T, D, generator=gen) * c.get("hidden_std", 1.0)
    if c.get("hidden_mean"):
        # A shared direction makes some experts popular (sinkhorn, capacity).
        hidden += c["hidden_mean"] * torch.randn(1, 1, D, generator=gen)
    inputs = {"hidden": hidden}
    if c["router"] == "xmoe":
        P = c["P"]
        inputs["projection"] = torch.randn(P, D, generator=gen) / math.sqrt(D)
        inputs["expert_embeddings"] = torch.randn(E, P, generator=gen)
        inputs["temperature"] = torch.tensor(c["temperature"])
    else:
        inputs["gate_weight"] = (torch.randn(E, D, generator=gen) *
                                 c.get("gate_scale", 1.0) / math.sqrt(D))
    if c["router"] == "attention_aware":
        H = c["H"]
        scores = torch.randn(B, H, T, T, generator=gen) * 1.5
        if c["attention_causal"]:
            future = torch.ones(T, T, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(future, -math.inf)
        inputs["attention_probs"] = scores.softmax(-1)
        inputs["attention_values"] = (
            0.5 * hidden[:, None] +
            torch.randn(B, H, T, D, generator=gen) * c.get("hidden_std", 1.0))
    if "lengths" in c:
        inputs["padding_mask"] = (torch.arange(T)[None, :] <
                                  torch.tensor(c["lengths"])[:, None])
    return {k: v.float() if v.is_floating_point() else v
            for k, v in inputs.items()}


# ------------------------------------------------------------- reference

def run_reference(c, inputs, overrides=None):
    kw = dict(c["kw"])
    kw.update(overrides or {})
    router = c["router"]
    if router == "token_choice":
        return ref.token_choice(inputs["hidden"], inputs["gate_weight"], **kw)
    if router == "expert_choice":
        return ref.expert_choice(inputs["hidden"], inputs["gate_weight"], **kw)
    if router == "unified":
        return ref.unified(inputs["hidden"], inputs["gate_weight"], **kw)
    if router == "similarity_aware":
        return ref.similarity_aware(inputs["hidden"], inputs["gate_weight"],
                                    padding_mask=inputs.get("padding_mask"),
                                    **kw)
    if router == "attention_aware":
        return ref.attention_aware(inputs["hidden"], inputs["gate_weight"],
                                   inputs["attention_probs"],
                                   inputs["attention_values"], **kw)
    if router == "xmoe":
        return ref.xmoe(inputs["hidden"], inputs["projection"],
                        inputs["expert_embeddings"], inputs["temperature"], **kw)
    if router == "sinkhorn":
        return ref.sinkhorn(inputs["hidden"], inputs["gate_weight"], **kw)
    raise ValueError(router)


def acceptable(c, inputs, out):
    """Whether a draw separates what case `c` is meant to separate."""
    saved = ref.Margins.smallest  # alternatives' own margins do not matter
    ok = True
    for overrides in c.get("differs_from", []):
        if torch.equal(run_reference(c, inputs, overrides)["selected"],
                       out["selected"]):
            ok = False
    if c["router"] == "token_choice" and c["kw"].get("capacity_factor", 0) > 0:
        # Some tokens lose a choice, others keep all of theirs.
        ok = ok and 0 < int(out["dropped"].sum()) < out["dropped"].numel()
    if c["router"] == "sinkhorn" and c["kw"]["training"]:
        # The contract leaves the order (rows or columns first) and whether an
        # iteration is one normalisation or a pair open: accept only draws on
        # which every reading chooses the same experts.
        n = c["kw"].get("iterations", 8)
        for iterations in (n, max(1, n // 2), 2 * n):
            for row_first in (True, False):
                alt = ref.sinkhorn(inputs["hidden"], inputs["gate_weight"],
                                   c["kw"]["k"], True, iterations, row_first,
                                   record_margins=False)
                ok = ok and torch.equal(alt["selected"], out["selected"])
    if c["router"] == "attention_aware" and \
            c["kw"].get("head_selection", "LOWEST_ENTROPY") == "LOWEST_ENTROPY":
        _, entropy = ref.attention_posterior(
            inputs["hidden"], inputs["attention_probs"],
            inputs["attention_values"], c["kw"].get("sigma", 1.0),
            c["kw"].get("likelihood_scale", "RELATIVE"))
        heads = entropy.argmin(1)
        ok = ok and bool((heads != heads[:, :1]).any())  # heads vary per token
    for overrides in c.get("load_balance_differs_from", []):
        # The load-balance conventions must change the loss visibly.
        mine = load_balance(c, out)
        other = load_balance(dict(c, **overrides), out)
        ok = ok and abs(mine - other) > 1e-3 * abs(mine)
    ref.Margins.smallest = saved
    return ok


def capacity_is_unambiguous(c):
    """ceil() of the capacity must not hinge on float rounding."""
    kw = c["kw"]
    if c["router"] == "token_choice" and kw.get("capacity_factor", 0) > 0:
        x = kw["capacity_factor"] * c["B"] * c["T"] * kw["k"] / c["E"]
    elif c["router"] == "expert_choice":
        x = kw.get("capacity_factor", 1.0) * c["T"] * kw["k"] / c["E"]
    else:
        return True
    frac = x - math.floor(x)
    return frac == 0 or 0.01 < frac < 0.99


def make_case(index, c):
    assert capacity_is_unambiguous(c), c["name"]
    for attempt in range(MAX_TRIES):
        gen = torch.Generator().manual_seed(BASE_SEED + 1000 * index + attempt)
        inputs = draw_inputs(gen, c)
        ref.Margins.reset()
        out = run_reference(c, inputs)
        if ref.Margins.smallest < MIN_RELATIVE_MARGIN:
            continue
        if not acceptable(c, inputs, out):
            continue
        return inputs, out, attempt
    raise RuntimeError(f"{c['name']}: no acceptable draw in {MAX_TRIES} tries")


def load_balance(c, out):
    """The unweighted load-balance loss under case c's conventions."""
    counted = ref.load_balance_counted(
        out, c.get("load_balance_counting", "CHOICES_BEFORE_CAPACITY"))
    return ref.load_balance_loss(
        out["gate_probs"], counted,
        c.get("load_balance_scores", "NORMALIZED_OVER_EXPERTS"))


def aux_losses(c, out):
    aux = {}
    if c.get("load_balance_coef"):
        aux["expected_aux_load_balance"] = \
            c["load_balance_coef"] * load_balance(c, out)
    if c.get("z_loss_coef"):
        aux["expected_aux_z_loss"] = c["z_loss_coef"] * \
            ref.router_z_loss(out["logits"])
    return aux


def spec_text(c):
    lines = [f'name: "{c["router"]}"', f'top_k: {c["top_k"]}']
    if c.get("load_balance_coef"):
        lines.append(f'load_balance_coef: {c["load_balance_coef"]}')
    if c.get("z_loss_coef"):
        lines.append(f'z_loss_coef: {c["z_loss_coef"]}')
    for field in ("load_balance_counting", "load_balance_scores"):
        if c.get(field):
            lines.append(f"{field}: {c[field]}")
    if c.get("options"):
        lines.append(f'{c["router"]} {{ {c["options"]} }}')
    return "\n".join(lines) + "\n"


def save_case(index, c):
    inputs, out, attempt = make_case(index, c)
    data = dict(inputs)
    data["training"] = torch.tensor(c.get("training", False))
    data["causal_model"] = torch.tensor(c.get("causal_model", False))
    for key, value in out.items():
        if key == "choices":  # not an output of the contract
            continue
        # The routers describe the aggregation only outside training.
        if c.get("training", False) and key.startswith("aggregation_"):
            continue
        data["expected_" + key] = value.float() if value.is_floating_point() \
            else value
    for key, value in aux_losses(c, out).items():
        data[key] = value.float()
    path = os.path.join(OUT_DIR, c["name"])
    torch.save(data, path + ".pt")
    with open(path + ".pbtxt", "w") as f:
        f.write(f"# Reference fixture {c['name']}: generated by "
                "routers/testdata/make_fixtures.py; do not edit.\n")
        f.write(spec_text(c))
    return attempt, ref_margin_summary(c, inputs)


def ref_margin_summary(c, inputs):
    ref.Margins.reset()
    run_reference(c, inputs)
    return ref.Margins.smallest


# ------------------------------------------------------------------ cases
# Each case: router name, sizes, the reference's keyword arguments `kw`, the
# RouterSpec's top_k and options text, flags, and `differs_from`: reference
# overrides whose selection must differ from this case's, so that the case
# really tells them apart.

CASES = [
    # token_choice -----------------------------------------------------
    dict(name="token_choice_dropless_k2", router="token_choice",
         B=2, T=6, D=8, E=4, top_k=2, kw=dict(k=2), options="",
         differs_from=[dict(k=1)]),
    dict(name="token_choice_renormalize_k3", router="token_choice",
         B=1, T=8, D=8, E=5, top_k=3, kw=dict(k=3, renormalize=True),
         options="renormalize: true"),
    dict(name="token_choice_sigmoid_renormalize", router="token_choice",
         B=2, T=5, D=6, E=4, top_k=2,
         kw=dict(k=2, gate="SIGMOID", renormalize=True),
         options="gate: SIGMOID renormalize: true", gate_scale=2.0),
    dict(name="token_choice_capacity_by_score", router="token_choice",
         B=2, T=8, D=8, E=4, top_k=2, hidden_mean=0.5,
         kw=dict(k=2, renormalize=True, capacity_factor=0.75,
                 drop_policy="DROP_BY_SCORE"),
         options="renormalize: true capacity_factor: 0.75 "
                 "drop_policy: DROP_BY_SCORE",
         differs_from=[dict(drop_policy="DROP_BY_POSITION")],
         load_balance_coef=0.5, z_loss_coef=0.25,
         # moelab's loss before 2026-12: f_e over the pairs kept.
         load_balance_counting="PAIRS_AFTER_CAPACITY"),
    dict(name="token_choice_capacity_by_position_training",
         router="token_choice", B=3, T=6, D=8, E=4, top_k=2, hidden_mean=0.5,
         kw=dict(k=2, capacity_factor=0.75, drop_policy="DROP_BY_POSITION"),
         options="capacity_factor: 0.75 drop_policy: DROP_BY_POSITION",
         training=True,
         differs_from=[dict(drop_policy="DROP_BY_SCORE")]),
    dict(name="token_choice_capacity_by_position_k1", router="token_choice",
         B=2, T=5, D=6, E=3, top_k=1, hidden_mean=0.5,
         kw=dict(k=1, capacity_factor=1.25, drop_policy="DROP_BY_POSITION"),
         options="capacity_factor: 1.25 drop_policy: DROP_BY_POSITION",
         differs_from=[dict(drop_policy="DROP_BY_SCORE")]),
    # expert_choice ----------------------------------------------------
    dict(name="expert_choice_default", router="expert_choice",
         B=2, T=8, D=8, E=4, top_k=2, kw=dict(k=2), options=""),
    dict(name="expert_choice_capacity_1_5", router="expert_choice",
         B=1, T=7, D=6, E=5, top_k=1, kw=dict(k=1, capacity_factor=1.5),
         options="capacity_factor: 1.5"),
    dict(name="expert_choice_capacity_clamped", router="expert_choice",
         B=2, T=3, D=4, E=3, top_k=2, kw=dict(k=2, capacity_factor=2.0),
         options="capacity_factor: 2"),
    # unified ----------------------------------------------------------
    dict(name="unified_per_sequence_default", router="unified",
         B=2, T=6, D=8, E=4, top_k=1.5, kw=dict(k=1.5), options="",
         differs_from=[dict(scope="PER_BATCH")]),
    dict(name="unified_per_sequence_softmax_tokens", router="unified",
         B=2, T=5, D=8, E=4, top_k=1.5,
         kw=dict(k=1.5, alpha=f32(0.3), beta=f32(0.7),
                 token_score="SOFTMAX_OVER_TOKENS", scope="PER_SEQUENCE"),
         options="alpha: 0.3 beta: 0.7 token_score: SOFTMAX_OVER_TOKENS "
                 "scope: PER_SEQUENCE",
         differs_from=[dict(token_score="SIGMOID_SCALED")]),
    dict(name="unified_per_batch_sigmoid", router="unified",
         B=3, T=4, D=6, E=5, top_k=2,
         kw=dict(k=2, scope="PER_BATCH"), options="scope: PER_BATCH",
         differs_from=[dict(scope="PER_SEQUENCE")]),
    dict(name="unified_per_batch_softmax_tokens", router="unified",
         B=2, T=5, D=8, E=4, top_k=1.5,
         kw=dict(k=1.5, alpha=0.5, beta=0.5,
                 token_score="SOFTMAX_OVER_TOKENS", scope="PER_BATCH"),
         options="alpha: 0.5 beta: 0.5 token_score: SOFTMAX_OVER_TOKENS "
                 "scope: PER_BATCH",
         differs_from=[dict(scope="PER_SEQUENCE")]),
    dict(name="unified_per_position_sigmoid", router="unified",
         B=3, T=5, D=8, E=4, top_k=1.5, causal_model=True,
         kw=dict(k=1.5, scope="PER_POSITION"), options="scope: PER_POSITION",
         differs_from=[dict(scope="PER_BATCH")]),
    dict(name="unified_per_position_softmax_tokens", router="unified",
         B=3, T=4, D=6, E=6, top_k=1,
         kw=dict(k=1, alpha=f32(0.7), beta=f32(0.3),
                 token_score="SOFTMAX_OVER_TOKENS", scope="PER_POSITION"),
         options="alpha: 0.7 beta: 0.3 token_score: SOFTMAX_OVER_TOKENS "
                 "scope: PER_POSITION"),
    # similarity_aware -------------------------------------------------
    # The paper's raw dot products (RAW_DOT_PRODUCT, tau 1 unless set).
    dict(name="similarity_aware_noncausal", router="similarity_aware",
         B=2, T=7, D=8, E=4, top_k=2, hidden_std=0.5,
         kw=dict(k=2, causal=False, scale="RAW_DOT_PRODUCT"),
         options="causal: false scale: RAW_DOT_PRODUCT",
         causal_model=True, differs_from=[dict(causal=True)]),
    dict(name="similarity_aware_causal_renormalize", router="similarity_aware",
         B=2, T=8, D=6, E=5, top_k=2, hidden_std=0.6,
         kw=dict(k=2, temperature=2.0, causal=True, renormalize=True,
                 scale="RAW_DOT_PRODUCT"),
         # `causal` left unset: resolved from the causal model.
         options="temperature: 2 renormalize: true scale: RAW_DOT_PRODUCT",
         causal_model=True, differs_from=[dict(causal=False)]),
    dict(name="similarity_aware_padding_sigmoid", router="similarity_aware",
         B=3, T=6, D=8, E=4, top_k=1, hidden_std=0.5, lengths=[6, 4, 3],
         kw=dict(k=1, temperature=0.5, causal=True, gate="SIGMOID",
                 scale="RAW_DOT_PRODUCT"),
         options="temperature: 0.5 causal: true gate: SIGMOID "
                 "scale: RAW_DOT_PRODUCT",
         load_balance_coef=0.5, z_loss_coef=0.25,
         # moelab's loss before 2026-12: P_e from the raw sigmoid.
         load_balance_scores="RAW_GATE"),
    # attention_aware --------------------------------------------------
    # The paper's likelihood in absolute units (ABSOLUTE).
    dict(name="attention_aware_lowest_entropy", router="attention_aware",
         B=2, T=6, D=8, E=4, H=2, top_k=2, hidden_std=0.5,
         attention_causal=True, causal_model=True,
         kw=dict(k=2, likelihood_scale="ABSOLUTE"),
         options="likelihood_scale: ABSOLUTE",
         differs_from=[dict(head_selection="LOWEST_MEAN_ENTROPY")]),
    dict(name="attention_aware_lowest_mean_entropy", router="attention_aware",
         B=2, T=5, D=8, E=4, H=3, top_k=1, hidden_std=0.5,
         attention_causal=False,
         kw=dict(k=1, sigma=1.5, head_selection="LOWEST_MEAN_ENTROPY",
                 likelihood_scale="ABSOLUTE"),
         options="sigma: 1.5 head_selection: LOWEST_MEAN_ENTROPY "
                 "likelihood_scale: ABSOLUTE",
         differs_from=[dict(head_selection="LOWEST_ENTROPY")]),
    dict(name="attention_aware_all_heads_renormalize", router="attention_aware",
         B=1, T=7, D=6, E=5, H=3, top_k=2, hidden_std=0.5,
         attention_causal=True, causal_model=True,
         kw=dict(k=2, head_selection="ALL_HEADS_WEIGHTED", renormalize=True,
                 likelihood_scale="ABSOLUTE"),
         options="head_selection: ALL_HEADS_WEIGHTED renormalize: true "
                 "likelihood_scale: ABSOLUTE",
         differs_from=[dict(head_selection="LOWEST_ENTROPY")]),
    # xmoe -------------------------------------------------------------
    dict(name="xmoe_k2", router="xmoe", B=2, T=6, D=8, E=4, P=4,
         temperature=0.07, top_k=2, kw=dict(k=2),
         options="projection_dim: 4"),
    dict(name="xmoe_temperature_clamped", router="xmoe", B=1, T=5, D=6, E=3,
         P=3, temperature=0.005, top_k=1, kw=dict(k=1),
         # The learned temperature has drifted below the floor; the spec's
         # initial value must itself be valid.
         options="projection_dim: 3"),
    # sinkhorn ---------------------------------------------------------
    dict(name="sinkhorn_evaluation", router="sinkhorn",
         B=2, T=6, D=8, E=4, top_k=2, hidden_mean=1.5,
         kw=dict(k=2, training=False), options="",
         differs_from=[dict(training=True)]),
    dict(name="sinkhorn_training_k1", router="sinkhorn", training=True,
         B=2, T=8, D=8, E=4, top_k=1, hidden_mean=1.5,
         kw=dict(k=1, training=True), options="",
         differs_from=[dict(training=False)]),
    dict(name="sinkhorn_training_k2_iterations3", router="sinkhorn",
         training=True, B=3, T=4, D=6, E=4, top_k=2, hidden_mean=1.5,
         kw=dict(k=2, training=True, iterations=3), options="iterations: 3",
         differs_from=[dict(training=False)]),
    # Cases added later go here, at the end: a case's seed depends on its
    # index, so inserting one earlier would redraw every case after it.
    # The load-balance loss as Switch (k = 1) and Megatron-Core define it
    # (the defaults): f_e over the choices before capacity ...
    dict(name="token_choice_capacity_load_balance_choices",
         router="token_choice", B=2, T=8, D=8, E=4, top_k=2, hidden_mean=0.5,
         kw=dict(k=2, capacity_factor=0.75), options="capacity_factor: 0.75",
         load_balance_coef=0.5,
         load_balance_differs_from=[
             dict(load_balance_counting="PAIRS_AFTER_CAPACITY")]),
    # ... and P_e from a sigmoid gate normalised over the experts.
    dict(name="token_choice_sigmoid_load_balance_normalized",
         router="token_choice", B=2, T=6, D=6, E=4, top_k=2, gate_scale=2.0,
         kw=dict(k=2, gate="SIGMOID"), options="gate: SIGMOID",
         load_balance_coef=1.0,
         load_balance_differs_from=[dict(load_balance_scores="RAW_GATE")]),
    # similarity_aware on unit-length states (COSINE_SIMILARITY, tau 0.1
    # unless set), moelab's default.
    dict(name="similarity_aware_cosine_default", router="similarity_aware",
         # A shared direction makes the tokens similar (cosine ~0.8), so S
         # is far from the identity at tau 0.1.
         B=2, T=7, D=8, E=4, top_k=2, hidden_mean=2.0,
         # Every option at its default; causal from the causal model.
         kw=dict(k=2, causal=True), options="", causal_model=True,
         load_balance_coef=0.5,
         differs_from=[dict(scale="RAW_DOT_PRODUCT", temperature=None)]),
    dict(name="similarity_aware_cosine_padding_sigmoid",
         router="similarity_aware",
         B=3, T=6, D=8, E=4, top_k=2, lengths=[6, 4, 3],
         kw=dict(k=2, temperature=0.5, causal=False, gate="SIGMOID",
                 renormalize=True),
         options="temperature: 0.5 causal: false gate: SIGMOID "
                 "renormalize: true",
         load_balance_coef=0.5, z_loss_coef=0.25,
         differs_from=[dict(scale="RAW_DOT_PRODUCT")],
         load_balance_differs_from=[dict(load_balance_scores="RAW_GATE")]),
    # attention_aware with sigma relative to the token's norm (RELATIVE),
    # moelab's default.
    dict(name="attention_aware_relative_default", router="attention_aware",
         B=2, T=6, D=8, E=4, H=2, top_k=2,
         attention_causal=True, causal_model=True,
         kw=dict(k=2), options="", load_balance_coef=0.5,
         differs_from=[dict(likelihood_scale="ABSOLUTE")]),
    dict(name="attention_aware_relative_all_heads", router="attention_aware",
         B=2, T=5, D=8, E=4, H=3, top_k=2, hidden_std=2.0,
         attention_causal=False,
         kw=dict(k=2, sigma=f32(0.5), head_selection="ALL_HEADS_WEIGHTED"),
         options="sigma: 0.5 head_selection: ALL_HEADS_WEIGHTED",
         differs_from=[dict(likelihood_scale="ABSOLUTE")]),
]


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    for name in os.listdir(OUT_DIR):  # drop cases that no longer exist
        os.remove(os.path.join(OUT_DIR, name))
    total = 0
    for index, c in enumerate(CASES):
        attempt, margin = save_case(index, c)
        size = sum(os.path.getsize(os.path.join(OUT_DIR, c["name"] + ext))
                   for ext in (".pt", ".pbtxt"))
        total += size
        print(f"{c['name']:45s} draw {attempt:3d}  margin {margin:.2e}  "
              f"{size} bytes")
    print(f"{len(CASES)} cases, {total} bytes")


if __name__ == "__main__":
    main()
