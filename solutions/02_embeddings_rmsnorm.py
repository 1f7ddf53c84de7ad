"""Solutions to the exercises of notebook 02: the embedding lookup and RMSNorm."""

import torch


def my_embeddings(table, tokens):
    return table[tokens].float()  # index first: only the prompt's rows are read and converted


def my_rms_norm(x, weight, eps):
    mean_square = (x * x).mean(dim=-1, keepdim=True)
    return x / torch.sqrt(mean_square + eps) * weight
