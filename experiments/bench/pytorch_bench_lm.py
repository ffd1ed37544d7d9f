#!/usr/bin/env python3
"""PyTorch eager baseline for the bench_lm MoE language model.

A straightforward, idiomatic PyTorch implementation of the model that moelab's
C++ trainer is compared against: the kind of top-k MoE layer found in public
MoE research code (fairseq / LibMoE style): a softmax router, top-k selection,
then a Python loop over experts that gathers each expert's tokens with
index_select, runs the expert FFN and scatters the weighted result back with
index_add_. Trained on random tokens; prints the training throughput.

Model: vocab 10000, d_model 128, 4 pre-LN blocks, 8 heads, learned positions,
final LayerNorm, untied bias-free output projection; every block's FFN is an MoE of
8 experts (128 -> 512 -> 128, GELU, biases), bias-free gate, softmax, top-2,
renormalised weights, dropless, Switch load-balancing loss (coefficient 0.01).
Sequence length 128, batch 16, Adam lr 1e-3, no dropout.

Precision: --precision fp32 (default) trains in fp32 throughout. --precision
bf16 is PyTorch's own CPU mixed precision, as its AMP documentation recommends:
forward and loss inside torch.autocast("cpu", dtype=torch.bfloat16) (its op
lists decide what runs in bf16: linear layers, matmuls, bmm), backward and the
Adam step outside it, master weights and optimizer state fp32. No GradScaler
(bf16 has fp32's exponent range).

Run: /usr/bin/python3 experiments/bench/pytorch_bench_lm.py --steps 30 --threads 2
     [--precision bf16]
"""

import argparse
import contextlib
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB_SIZE = 10000
MODEL_DIM = 128
NUM_LAYERS = 4
NUM_HEADS = 8
NUM_EXPERTS = 8
FFN_DIM = 512
TOP_K = 2
SEQ_LEN = 128
BATCH_SIZE = 16
LEARNING_RATE = 1e-3
LOAD_BALANCE_COEF = 0.01


class Expert(nn.Module):
    """Two-layer FFN: D -> H -> D with GELU."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TopKMoE(nn.Module):
    """Dropless top-k MoE FFN with a Switch-style load-balancing loss."""

    def __init__(self, dim, hidden_dim, num_experts, top_k):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.gate = nn.Linear(dim, num_experts, bias=False)  # weight [E, D]
        self.experts = nn.ModuleList(
            [Expert(dim, hidden_dim) for _ in range(num_experts)])

    def forward(self, x):
        # x: [B, T, D] -> tokens [N, D]
        batch, seq, dim = x.shape
        tokens = x.reshape(-1, dim)
        num_tokens = tokens.shape[0]

        probs = F.softmax(self.gate(tokens), dim=-1)  # [N, E]
        top_weights, top_experts = probs.topk(self.top_k, dim=-1)  # [N, k]
        top_weights = top_weights / top_weights.sum(dim=-1, keepdim=True)

        # Switch load-balancing loss: E * sum_e f_e * P_e, where f_e is the
        # fraction of the N*k assignments sent to expert e and P_e the mean
        # router probability of e.
        expert_mask = F.one_hot(top_experts, self.num_experts).float()  # [N, k, E]
        fraction_routed = expert_mask.sum(dim=(0, 1)) / (num_tokens * self.top_k)
        mean_prob = probs.mean(dim=0)
        aux_loss = self.num_experts * torch.sum(fraction_routed * mean_prob)

        output = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token_idx, slot = torch.where(top_experts == e)  # [n_e], [n_e]
            if token_idx.numel() == 0:
                continue
            expert_in = tokens.index_select(0, token_idx)  # [n_e, D]
            weight = top_weights[token_idx, slot].unsqueeze(-1)  # [n_e, 1]
            # .to(): under bf16 autocast the expert output is bf16 and
            # index_add_ needs the accumulator's type (no-op in fp32).
            output.index_add_(0, token_idx,
                              (expert(expert_in) * weight).to(output.dtype))
        return output.reshape(batch, seq, dim), aux_loss


class Block(nn.Module):
    """Pre-LN block: x + Attn(LN(x)); x + MoE(LN(x))."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0,
                                          batch_first=True)
        self.ln_moe = nn.LayerNorm(dim)
        self.moe = TopKMoE(dim, FFN_DIM, NUM_EXPERTS, TOP_K)

    def forward(self, x, causal_mask):
        h = self.ln_attn(x)
        attn_out, _ = self.attn(h, h, h, attn_mask=causal_mask,
                                need_weights=False)
        x = x + attn_out
        moe_out, aux_loss = self.moe(self.ln_moe(x))
        return x + moe_out, aux_loss


class MoELanguageModel(nn.Module):

    def __init__(self):
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB_SIZE, MODEL_DIM)
        self.position_embedding = nn.Embedding(SEQ_LEN, MODEL_DIM)
        self.blocks = nn.ModuleList(
            [Block(MODEL_DIM, NUM_HEADS) for _ in range(NUM_LAYERS)])
        self.ln_final = nn.LayerNorm(MODEL_DIM)
        self.output = nn.Linear(MODEL_DIM, VOCAB_SIZE, bias=False)  # as in moelab and GPT-2
        # True above the diagonal = position may not attend there.
        self.register_buffer(
            "causal_mask",
            torch.triu(torch.ones(SEQ_LEN, SEQ_LEN, dtype=torch.bool), 1),
            persistent=False)

    def forward(self, tokens):
        # tokens: [B, T] -> logits [B, T, V], summed aux loss
        seq = tokens.shape[1]
        positions = torch.arange(seq, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        mask = self.causal_mask[:seq, :seq]
        aux_total = x.new_zeros(())
        for block in self.blocks:
            x, aux_loss = block(x, mask)
            aux_total = aux_total + aux_loss
        return self.output(self.ln_final(x)), aux_total


def autocast_for(precision):
    """The context the forward pass and loss run in."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, optimizer, batch, precision):
    inputs, targets = batch[:, :-1], batch[:, 1:]
    with autocast_for(precision):
        logits, aux_loss = model(inputs)
        lm_loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE),
                                  targets.reshape(-1))
        loss = lm_loss + LOAD_BALANCE_COEF * aux_loss
    # Backward and the optimizer step outside autocast (the PyTorch AMP
    # recipe): gradients reach the fp32 parameters in fp32.
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30,
                        help="timed training steps")
    parser.add_argument("--warmup_steps", type=int, default=5,
                        help="untimed steps before timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32, or bf16 through CPU autocast (forward and "
                        "loss in torch.autocast('cpu', dtype=torch.bfloat16))")
    parser.add_argument("--profile", action="store_true",
                        help="profile a few extra steps and print top ops")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup_steps < 0 or args.threads < 1:
        parser.error("--steps and --threads must be >= 1, "
                     "--warmup_steps >= 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = MoELanguageModel()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    num_params = sum(p.numel() for p in model.parameters())

    profile_steps = 3 if args.profile else 0
    total_steps = args.warmup_steps + args.steps + profile_steps
    # Each sequence has SEQ_LEN + 1 tokens: SEQ_LEN inputs, SEQ_LEN targets.
    generator = torch.Generator().manual_seed(args.seed)
    batches = torch.randint(0, VOCAB_SIZE, (total_steps, BATCH_SIZE, SEQ_LEN + 1),
                            generator=generator)

    print(f"model: bench_lm (pytorch {torch.__version__} eager, CPU)")
    print(f"  vocab {VOCAB_SIZE}, d_model {MODEL_DIM}, layers {NUM_LAYERS}, "
          f"heads {NUM_HEADS}, experts {NUM_EXPERTS} x ({MODEL_DIM}->{FFN_DIM}"
          f"->{MODEL_DIM}), top-{TOP_K}, dropless, "
          f"load-balance coef {LOAD_BALANCE_COEF}")
    print(f"  seq_len {SEQ_LEN}, batch {BATCH_SIZE}, adam lr {LEARNING_RATE}")
    print(f"  parameters: {num_params}")
    print(f"  threads: {args.threads}, warmup steps: {args.warmup_steps}, "
          f"timed steps: {args.steps}, seed: {args.seed}")
    print(f"precision: {args.precision}"
          + ("  (torch.autocast cpu bfloat16 around forward and loss; "
             "fp32 weights and Adam)" if args.precision == "bf16" else ""))

    step = 0
    for _ in range(args.warmup_steps):
        train_step(model, optimizer, batches[step], args.precision)
        step += 1

    start = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step(model, optimizer, batches[step], args.precision)
        step += 1
    elapsed = time.perf_counter() - start
    final_loss = loss.item()

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(profile_steps):
                train_step(model, optimizer, batches[step], args.precision)
                step += 1
        print(f"profile of {profile_steps} steps:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total",
                                        row_limit=25))

    tokens_per_s = args.steps * BATCH_SIZE * SEQ_LEN / elapsed
    print(f"final loss: {final_loss:.4f}")
    print(f"mean_step_ms: {1000.0 * elapsed / args.steps:.1f}")
    print(f"train_tokens_per_s: {tokens_per_s:.1f}")


if __name__ == "__main__":
    main()
