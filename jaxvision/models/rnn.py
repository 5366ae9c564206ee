"""RowRNN: an image read as a sequence of rows by a stack of bidirectional LSTMs or GRUs.

The classic "sequential MNIST by rows" baseline: no convolutions, so what it learns about 2D
structure it learns through recurrence over H. Meant for small inputs (8x8, 28x28, 32x32).
"""

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.layers import tap

# cell name -> flax cell class. OptimizedLSTMCell has the same parameters as nn.LSTMCell but
# does one matmul per step for the four gates, which is what dominates a small RNN's step.
CELLS: dict[str, type[nn.RNNCellBase]] = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


class RowRNN(nn.Module):
    """rows → `num_layers` bidirectional RNNs over H → final states → dropout → dense.

    Row h of the image, flattened to [W * C], is time step h. Each layer is a forward and a
    backward RNN (`cell` "lstm" or "gru", `hidden` units each) whose per-row outputs are
    concatenated, [B, H, 2 * hidden], and read by the next layer. The pre-logits are the last
    layer's final outputs of both directions: the forward one after row H-1 and the backward one
    after row 0, [B, 2 * hidden].

    Final states rather than a mean over rows: a final state has read every row, while a mean
    gives equal weight to outputs that have seen a few rows only (the forward output at row 0
    has seen row 0 alone), so it blurs the whole-image summary the recurrence builds. It is
    also the read-out of the sequential-MNIST baselines this model reproduces.

    Only a `params` collection (float32); dropout draws from the `dropout` rng when `train` and
    `dropout_rate > 0`.
    """

    # The top-level module that maps features to classes (a new head when fine-tuning).
    classifier: ClassVar[str] = "fc"

    num_classes: int
    hidden: int = 128
    cell: str = "lstm"
    num_layers: int = 2
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32  # compute dtype; parameters are always float32

    def __post_init__(self):
        # Checked at construction so a bad config fails before any tracing.
        if self.cell not in CELLS:
            raise UserError(
                f"unknown RowRNN cell {self.cell!r}: choose one of {', '.join(sorted(CELLS))}"
            )
        if self.num_layers < 1:
            raise UserError(f"RowRNN num_layers must be at least 1, got {self.num_layers!r}")
        super().__post_init__()

    def feature_names(self) -> tuple[str, ...]:
        """The maps `features=True` returns besides "pre_logits", shallow to deep: each layer's
        per-row outputs "rows_0".."rows_{num_layers-1}" (see `__call__`)."""
        return tuple(f"rows_{i}" for i in range(self.num_layers))

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, train: bool = False, features: bool = False
    ) -> jnp.ndarray | dict[str, jnp.ndarray]:
        """images: [B, H, W, C] float (normalised) → logits: [B, num_classes] float32.

        With `features=True` returns instead {"pre_logits": [B, 2 * hidden] float32,
        "rows_0".."rows_{num_layers-1}": [B, H, 2 * hidden] float32}: rows_i is layer i's
        per-row outputs, forward direction in [..., :hidden] (row h has read rows 0 .. h of its
        input) and backward in [..., hidden:] (rows H-1 .. h), both in row order. With a bfloat16
        `dtype` the matmuls run in bfloat16; the recurrent state stays float32.
        """
        b, h, w, c = x.shape
        y = x.reshape(b, h, w * c)  # time = rows
        rows = {}
        for i in range(self.num_layers):
            y = nn.Bidirectional(self._rnn(), self._rnn(), name=f"layer{i}")(y)
            y = tap(f"rows_{i}", y)
            rows[f"rows_{i}"] = y.astype(jnp.float32)

        # Bidirectional keeps the backward outputs in row order, so its final state (after
        # reading row 0) is at row 0; the forward final state is at row H-1.
        pre_logits = jnp.concatenate([y[:, -1, : self.hidden], y[:, 0, self.hidden :]], axis=-1)
        pre_logits = pre_logits.astype(jnp.float32)
        # The head runs with `features=True` too, so that init in that mode still creates `fc`.
        z = nn.Dropout(self.dropout_rate, deterministic=not train)(pre_logits)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(z)
        logits = logits.astype(jnp.float32)
        if features:
            return {"pre_logits": pre_logits, **rows}
        return logits

    def _rnn(self) -> nn.RNN:
        # parent=None leaves the RNN and its cell unbound, so Bidirectional adopts them and the
        # parameters nest as `layer{i}/{forward,backward}_rnn/cell/...`; created bound, the cells
        # would land flat on RowRNN as `OptimizedLSTMCell_0..` and hide which layer is which.
        cell = CELLS[self.cell](
            features=self.hidden, dtype=self.dtype, param_dtype=jnp.float32, parent=None
        )
        return nn.RNN(cell, parent=None)
