"""Rotary position embeddings (RoPE), as in Meta's Llama 3 (taught in notebook 03), and their scaling.

Each head vector is read as head_dim/2 pairs of numbers, each pair a complex
number. A token at position m has pair j turned by the angle m * theta_j,
with theta_j = rope_theta ** (-2j / head_dim): fast turns for the first
pairs, slow ones for the last. Meta's checkpoint puts the two numbers of a
pair next to each other (adjacent pairs): `apply_rope`. Hugging Face's
converted checkpoints pair each number with the one half a head further on,
their wq/wk rows reordered to match: `apply_rope_half_split` (notebook 07b).

Llama 3.1 and later stretch the slow turns so that a long context looks, to
those pairs, like the one the model was first trained on (`RopeScaling`,
`scale_frequencies`). `model_frequencies` gives a model's angles, scaling included.
"""

import dataclasses
import math
from dataclasses import dataclass

import torch

from .errors import LlamaError

# Llama 3.1's RoPE scaling: the context the model was first trained on, and the two
# wavelength bands, as fractions of it, between which the scaling fades in.
ORIGINAL_CONTEXT = 8192
LOW_FREQ_FACTOR = 1.0
HIGH_FREQ_FACTOR = 4.0


@dataclass(frozen=True)
class RopeScaling:
    """How a model slows RoPE's long wavelengths (see `scale_frequencies`).

    Llama 3.1, 3.2 and 3.3: factor 8 or 32, low_freq_factor 1, high_freq_factor 4, original context 8192.
    Llama 4: factor 16 and high_freq_factor 1 (no blended band).
    """

    factor: float
    low_freq_factor: float = LOW_FREQ_FACTOR
    high_freq_factor: float = HIGH_FREQ_FACTOR
    original_context: int = ORIGINAL_CONTEXT

    def scale(self, freqs):
        return scale_frequencies(freqs, self.factor, self.low_freq_factor, self.high_freq_factor,
                                 self.original_context)


def scale_frequencies(freqs, factor, low_freq_factor=LOW_FREQ_FACTOR, high_freq_factor=HIGH_FREQ_FACTOR,
                      original_context=ORIGINAL_CONTEXT):
    """Llama 3.1's scaling of the turn rates `freqs` (radians per position), for a longer context.

    A pair's wavelength is the number of positions of one full turn, 2*pi / freq. Pairs whose
    wavelength is shorter than original_context / high_freq_factor (2,048 positions) are kept: they
    tell nearby tokens apart. Pairs longer than original_context / low_freq_factor (8,192) turn
    `factor` times slower, so that 8,192 * factor positions look to them like 8,192 did in training.
    Between the two, the rate is a blend, moving smoothly from the first rule to the second.
    """
    wavelength = 2 * math.pi / freqs
    turns = original_context / wavelength
    if high_freq_factor == low_freq_factor:  # no band between the two rules (Llama 4)
        keep = (turns >= high_freq_factor).float()
    else:  # 1 for short wavelengths (keep), 0 for long ones (divide), linear in 1/wavelength between.
        keep = ((turns - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0, 1)
    return keep * freqs + (1 - keep) * freqs / factor


def pair_frequencies(head_dim, theta, scaling=None):
    """Each pair's turn rate theta_j in radians per position; `scaling` a factor (Llama 3.1's rule) or a
    `RopeScaling`, None for none."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    if isinstance(scaling, RopeScaling):
        return scaling.scale(freqs)
    return freqs if scaling is None else scale_frequencies(freqs, scaling)


def rope_frequencies(head_dim, positions, theta, scale_factor=None):
    """Unit complex numbers e^(i * m * theta_j): one row per position m, one column per pair j.

    `scale_factor` (Llama 3.1 and later; `params.rope_scaling_factor`, or a `RopeScaling`) slows the
    long wavelengths down; None leaves them as Llama 3 has them.
    """
    freqs = pair_frequencies(head_dim, theta, scale_factor)
    angles = torch.outer(torch.as_tensor(positions).float(), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def model_frequencies(params, positions):
    """`rope_frequencies` for the model of `params` (a `Params`) at `positions`, its RoPE scaling included."""
    return rope_frequencies(params.head_dim, positions, params.rope_theta, params.rope_scaling)


# ---- Which scaling a model gets ------------------------------------------------------------------------

def rope_scaling_for(dim, known):
    """The `RopeScaling` of the Llama 3.1+ model of width `dim`, and a sentence saying why.

    `known` maps a width to (model name, RopeScaling): helpers.params.ROPE_SCALING_BY_DIM. Meta's
    params.json says only `use_scaled_rope: true`; a width no model has gets Llama 3.1's factor, 8.
    """
    if dim in known:
        name, scaling = known[dim]
        return scaling, f"{name}'s factor: params.json says use_scaled_rope, and dim {dim} is {name}'s"
    return RopeScaling(8.0), (f"Llama 3.1's factor: params.json says use_scaled_rope, and dim {dim} is "
                              "no model this course knows")


def with_scaling_factor(params, factor, where="This model", source="as you asked"):
    """`params` with RoPE scaled by `factor` in place of its own; a LlamaError for a Llama 3 model or a bad factor."""
    if params.rope_scaling is None:
        raise LlamaError(f"{where} is a Llama 3 model without scaled RoPE (no use_scaled_rope in its params.json): "
                         "there is no scale factor to choose. Leave rope_scaling_factor out.")
    if not (math.isfinite(factor) and factor > 0):
        raise LlamaError(f"The RoPE scale factor must be a finite number above 0, not {factor}.")
    scaling = dataclasses.replace(params.rope_scaling, factor=float(factor))
    return dataclasses.replace(params, rope_scaling=scaling, rope_scaling_source=source)


def lined_up(freqs, x):
    """`freqs` (seq, head_dim/2) lined up with x's first axis and repeated over any head axes of `x`."""
    return freqs.view(freqs.shape[0], *[1] * (x.dim() - 2), freqs.shape[-1])


def apply_rope(x, freqs):
    """Rotate `x` (seq, ..., head_dim) by `freqs` (seq, head_dim/2), pair by pair: (x0, x1), (x2, x3), ..."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * lined_up(freqs, x)).flatten(-2).type_as(x)


def apply_rope_half_split(x, freqs):
    """RoPE in Hugging Face's layout ("rotate half"): pair j is (x_j, x_(j + head_dim/2)).

    Right for wq/wk rows reordered as Hugging Face's conversion does; on Meta's own rows, wrong.
    """
    half = x.shape[-1] // 2
    pairs = torch.complex(x[..., :half].float(), x[..., half:].float())
    turned = pairs * lined_up(freqs, x)
    return torch.cat([turned.real, turned.imag], dim=-1).type_as(x)


# ---- The two row layouts of wq and wk ---------------------------------------------------------------

def half_split_rows(w, n_heads):
    """wq or wk rows (n_heads * head_dim, dim) reordered from Meta's adjacent pairs to Hugging Face's halves:
    in each head, rows 0, 2, 4, ... come first, then rows 1, 3, 5, ... (`n_heads`: n_kv_heads for wk)."""
    dim = w.shape[-1]
    return w.reshape(n_heads, -1, 2, dim).transpose(1, 2).reshape(-1, dim)


def interleaved_rows(w, n_heads):
    """The inverse of `half_split_rows`: a Hugging Face q_proj or k_proj (n_heads * head_dim, dim) with the
    rows of each head in Meta's order, pair by pair, so that `apply_rope` rotates the right numbers together.

    The result is a new tensor of `w`'s dtype: a reordering of rows is not a view of the file."""
    dim = w.shape[-1]
    return w.reshape(n_heads, 2, -1, dim).transpose(1, 2).reshape(-1, dim)
