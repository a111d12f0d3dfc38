"""Loss implementations side by side on this machine: plain (full logits, fp32 cross-entropy, as
transformers computes it) against chunked (TRL's fused LM head, `ChunkedLogProbFunction`), for
the forward and backward of the LM head and loss alone.

    PYTHONPATH=src python benchmarks/loss_impl.py [--tokens 2048] [--hidden 512]

Prints per vocabulary size the median time of forward + backward and the bytes autograd saves
(saved_tensors_hooks) plus the largest transient the loss allocates (the full logits and their
fp32 copies for plain, one tile for chunked), and the largest gradient difference.
"""

from __future__ import annotations

import argparse
import statistics
import time


def plain_loss(hidden, weight, labels):
    import torch.nn.functional as F

    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, labels, reduction="sum")


def chunked_loss(hidden, weight, labels):
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    log_probs = ChunkedLogProbFunction.apply(hidden, weight, None, labels, 1.0, 32768, None, 1.0, ())[0]
    return -log_probs.sum()


def timed(loss_fn, hidden, weight, labels, repeats: int) -> tuple[float, int, object]:
    import torch

    times, saved = [], [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    for _ in range(repeats + 1):
        saved[0] = 0
        leaf = hidden.detach().requires_grad_()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(leaf, weight, labels)
        loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), saved[0], leaf.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, nargs="+", default=[1024, 32000, 128256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    for vocab in args.vocab:
        hidden = torch.randn(args.tokens, args.hidden)
        weight = torch.randn(vocab, args.hidden) / args.hidden**0.5
        labels = torch.randint(0, vocab, (args.tokens,))
        plain_s, plain_saved, plain_grad = timed(plain_loss, hidden, weight, labels, args.repeats)
        chunk_s, chunk_saved, chunk_grad = timed(chunked_loss, hidden, weight, labels, args.repeats)
        diff = (plain_grad - chunk_grad).abs().max().item()
        print(f"vocab {vocab:6d}: plain {plain_s * 1e3:7.1f} ms saved {plain_saved / 2**20:7.1f} MiB | "
              f"chunked {chunk_s * 1e3:7.1f} ms saved {chunk_saved / 2**20:7.1f} MiB | "
              f"chunked/plain time {chunk_s / plain_s:.2f}x, max |grad diff| {diff:.2e}")


if __name__ == "__main__":
    main()
