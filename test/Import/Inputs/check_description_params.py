#!/usr/bin/env python3
"""Checks moe-compile's --report JSON against parameter counts computed here
from the model description by closed-form formulas (an implementation
independent of the importer and the cost model).

usage: check_description_params.py DESCRIPTION.json REPORT.json [--approx N]
--approx N: also require the total to be within 3% of N (the seed's claim).
"""
import json
import sys


def expected(d):
    L, D, H = d["num_layers"], d["hidden_size"], d["num_attention_heads"]
    KV = d.get("num_kv_heads", H)
    F = d.get("ffn_hidden_size", 4 * D)
    V, P = d["vocab_size"], d["max_position_embeddings"]
    act = d.get("activation", "gelu")
    gated = act in ("swiglu", "geglu")
    bias = d.get("norm", "layernorm") == "layernorm"
    learned = d.get("position", "learned") == "learned"
    tied = d.get("tie_word_embeddings", True)
    hd = D // H

    def mlp(width, with_bias):
        return (3 if gated else 2) * D * width + ((width + D) if with_bias else 0)

    attn = D * (H + 2 * KV) * hd + H * hd * D
    if bias:
        attn += (H + 2 * KV) * hd + D
    norm = 2 * D if bias else D
    total = V * D + (P * D if learned else 0) + norm + (0 if tied else V * D)
    inactive = 0
    moe = d.get("moe")
    moe_layers = []
    if moe:
        k = moe.get("expert_interval", 2)
        moe_layers = [i for i in range(L) if (i + 1) % k == 0]
        experts = moe["num_experts"]
        if isinstance(experts, int):
            experts = [experts] * len(moe_layers)
        per_layer = dict(zip(moe_layers, experts))
        top_k = moe.get("top_k", 1)
    for i in range(L):
        total += attn + 2 * norm
        if i not in moe_layers:
            total += mlp(F, bias)
            continue
        E = per_layer[i]
        expert = mlp(F, bias)
        total += E * D + E * expert
        inactive += (E - top_k) * expert
        S = moe.get("shared_expert_size", 0)
        if S:
            total += mlp(S, False) + D
        if moe.get("use_residual", False):
            total += mlp(F, bias) + 2 * D + 2
    return total, total - inactive


def main():
    desc = json.load(open(sys.argv[1]))
    report = json.load(open(sys.argv[2]))
    total, active = expected(desc)
    ok = report["total_params"] == total and report["active_params"] == active
    print(f"{desc.get('name')}: expected total {total} active {active}; "
          f"report total {report['total_params']} active {report['active_params']}")
    if "--approx" in sys.argv:
        claim = float(sys.argv[sys.argv.index("--approx") + 1])
        close = abs(total - claim) <= 0.03 * claim
        print(f"seed claim {claim:.4g}: {'within' if close else 'NOT within'} 3%")
        ok = ok and close
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
