"""RowRNN: shapes, exact parameter counts, what each direction reads, bf16, and that it learns."""

import functools
import types

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import jaxvision.models as models
from jaxvision.errors import UserError
from jaxvision.models.rnn import RowRNN

SHAPES = [(2, 28, 28, 1), (2, 8, 8, 1), (2, 32, 32, 3)]


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("shape", SHAPES)
def test_logits_and_features_shapes(cell, shape):
    # Shapes are a property of the trace; the tests below run the model for real.
    model = RowRNN(num_classes=10, cell=cell, hidden=16)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
    assert set(variables) == {"params"}
    assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)
    out = jax.eval_shape(functools.partial(model.apply, features=True), variables, x)
    assert set(out) == {"pre_logits", "rows_0", "rows_1"}
    assert (out["pre_logits"].shape, out["pre_logits"].dtype) == ((2, 32), jnp.float32)
    assert (out["rows_0"].shape, out["rows_0"].dtype) == ((2, shape[1], 32), jnp.float32)


def _lstm_params(d_in, h):
    # OptimizedLSTMCell (same as LSTMCell): gates i, f, g, o each have an input kernel [d_in, h]
    # without bias and a recurrent kernel [h, h] with bias [h].
    return 4 * (d_in * h) + 4 * (h * h + h)


def _gru_params(d_in, h):
    # GRUCell: r, z, n each have an input kernel [d_in, h] with bias [h]; the recurrent kernels
    # [h, h] of r and z have no bias (it would add to the input's), n's has one because it is
    # gated by r before the sum.
    return 3 * (d_in * h + h) + 3 * (h * h) + h


@pytest.mark.parametrize(("cell", "per_direction"), [("lstm", _lstm_params), ("gru", _gru_params)])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_param_count(cell, per_direction, num_layers):
    h, classes, shape = 128, 10, (1, 28, 28, 1)
    model = RowRNN(num_classes=classes, cell=cell, hidden=h, num_layers=num_layers)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    # Layer 0 reads a row, W * C = 28 values; later layers read the previous layer's 2h.
    rnn = 2 * per_direction(28, h) + (num_layers - 1) * 2 * per_direction(2 * h, h)
    fc = 2 * h * classes + classes
    assert n == rnn + fc
    if (cell, num_layers) == ("lstm", 2):
        assert n == 557_578  # the default model at 28x28x1, 10 classes
    if (cell, num_layers) == ("gru", 2):
        assert n == 419_338


HIDDEN = 16


@pytest.fixture(scope="module", params=["lstm", "gru"])
def small(request):
    """A default-depth RowRNN (hidden 16, dropout 0.2), its variables, 32 digits
    x: [32, 8, 8, 1] and their labels: [32].

    Built once per cell: initialisation and compilation are most of these tests' time.
    """
    digits = load_digits()
    x = jnp.asarray(digits.images[:32, :, :, None] / 16.0, jnp.float32)
    labels = jnp.asarray(digits.target[:32])
    model = RowRNN(num_classes=10, cell=request.param, hidden=HIDDEN, dropout_rate=0.2)
    # init's structure filled by numpy: nothing to compile (init run eagerly costs seconds).
    rng = np.random.default_rng(0)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    variables = jax.tree.map(lambda s: (rng.normal(size=s.shape) * 0.3).astype(s.dtype), abstract)
    # Compiled functions shared by the tests (eager applies re-trace the scans every call).
    return types.SimpleNamespace(
        model=model,
        variables=variables,
        x=x,
        labels=labels,
        logits=jax.jit(model.apply),
        train_logits=jax.jit(functools.partial(model.apply, train=True)),
        features=jax.jit(functools.partial(model.apply, features=True)),
    )


def _swap_directions(params):
    layer0 = dict(params["layer0"])
    layer0["forward_rnn"], layer0["backward_rnn"] = layer0["backward_rnn"], layer0["forward_rnn"]
    return {**params, "layer0": layer0}


def test_flipping_rows_swaps_the_directions(small):
    # With the two directions' weights exchanged, the forward RNN reading the rows bottom-up must
    # compute exactly what the backward RNN computed on the original image, and vice versa.
    variables, x, features, h = small.variables, small.x, small.features, HIDDEN
    rows = features(variables, x)["rows_0"]
    swapped = {"params": _swap_directions(variables["params"])}
    rows_flipped = features(swapped, x[:, ::-1])["rows_0"]
    np.testing.assert_allclose(rows_flipped[:, :, :h], rows[:, ::-1, h:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows_flipped[:, :, h:], rows[:, ::-1, :h], rtol=1e-5, atol=1e-6)
    # And the two directions really differ (not one RNN read twice).
    assert not np.allclose(rows[:, :, :h], rows[:, :, h:], atol=1e-3)


def test_each_direction_sees_only_its_side_of_a_row(small):
    # Changing row t moves the forward outputs at rows >= t and the backward outputs at rows <= t
    # only: the forward direction reads top-down, the backward one bottom-up.
    variables, x, features, h, t = small.variables, small.x, small.features, HIDDEN, 3
    rows = features(variables, x)["rows_0"]
    rows2 = features(variables, x.at[:, t].add(1.0))["rows_0"]
    diff = np.abs(np.asarray(rows2 - rows))
    changed_fwd, changed_bwd = diff[..., :h].max(axis=(0, 2)), diff[..., h:].max(axis=(0, 2))
    np.testing.assert_array_equal(changed_fwd[:t], 0)
    np.testing.assert_array_equal(changed_bwd[t + 1 :], 0)
    assert (changed_fwd[t:] > 1e-6).all() and (changed_bwd[: t + 1] > 1e-6).all()


def test_pre_logits_are_the_last_layers_final_states(small):
    # Re-run the last layer's two RNNs on the first layer's per-row outputs by hand: their
    # outputs are rows_1, the forward carry after row H-1 and the backward carry after row 0 are
    # the pre-logits, and (not training, so no dropout) the logits are the head applied to them.
    model, variables = small.model, small.variables
    out = small.features(variables, small.x)
    cell_cls = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}[model.cell]
    rnn = nn.RNN(cell_cls(HIDDEN), return_carry=True)

    @jax.jit  # one program for both directions (each eager scan compiles on its own)
    def by_hand(layer1, rows_0):
        final, rows = [], []
        for direction, reverse in [("forward_rnn", False), ("backward_rnn", True)]:
            params = {"params": layer1[direction]}
            carry, y = rnn.apply(params, rows_0, reverse=reverse, keep_order=True)
            final.append(carry[1] if model.cell == "lstm" else carry)  # an LSTM carry is (c, h)
            rows.append(y)
        return jnp.concatenate(rows, -1), jnp.concatenate(final, axis=-1)

    rows, expected = by_hand(variables["params"]["layer1"], out["rows_0"])
    np.testing.assert_allclose(out["rows_1"], rows, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["pre_logits"], expected, rtol=1e-5, atol=1e-6)
    fc = variables["params"]["fc"]
    logits = small.logits(variables, small.x)
    head = np.asarray(expected) @ fc["kernel"] + fc["bias"]
    np.testing.assert_allclose(logits, head, rtol=1e-5, atol=1e-5)


def test_dropout_draws_from_the_dropout_rng_when_training(small):
    # Not training there is no dropout: the pre-logits test checks the head exactly.
    variables, x, train_logits = small.variables, small.x, small.train_logits
    a = train_logits(variables, x, rngs={"dropout": jax.random.key(2)})
    b = train_logits(variables, x, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(
        a, train_logits(variables, x, rngs={"dropout": jax.random.key(2)})
    )
    assert not np.allclose(a, small.logits(variables, x))
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        train_logits(variables, x)


@pytest.mark.slow
def test_bfloat16_compute_float32_params_and_logits(small):
    variables, x = small.variables, small.x
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    bf16 = RowRNN(num_classes=10, cell=small.model.cell, hidden=HIDDEN, dtype=jnp.bfloat16)
    out = jax.eval_shape(functools.partial(bf16.apply, features=True), variables, x)
    assert out["pre_logits"].dtype == out["rows_0"].dtype == out["rows_1"].dtype == jnp.float32
    logits = jax.jit(bf16.apply)(variables, x)
    assert logits.dtype == jnp.float32
    # Same parameters, float32 compute: bf16 only rounds, it computes the same function.
    reference = small.logits(variables, x)
    np.testing.assert_allclose(logits, reference, atol=0.05)
    assert not np.array_equal(logits, reference)  # and it did compute in bfloat16


@pytest.mark.slow
def test_trains_on_a_fixed_batch_of_digits(small):
    model, images, labels = small.model, small.x, small.labels
    tx = optax.adam(1e-2)

    def loss_fn(params, train=False, key=None):
        rngs = {"dropout": key} if train else {}
        logits = model.apply({"params": params}, images, train=train, rngs=rngs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def train(params):
        def step(carry, key):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, True, key)
            updates, opt_state = tx.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), loss

        keys = jax.random.split(jax.random.key(5), 30)
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), keys)
        return losses, loss_fn(params)  # on the final parameters, without dropout

    losses, final = train(small.variables["params"])
    assert np.isfinite(np.asarray(losses)).all()
    assert losses[0] > 2.0  # chance level is ln(10) = 2.3
    assert final < 0.5 * losses[0], (float(losses[0]), float(final))


def test_registry_builds_row_rnn():
    model = models.build("row_rnn", num_classes=10)
    assert isinstance(model, RowRNN)
    assert (model.hidden, model.cell, model.num_layers) == (128, "lstm", 2)
    assert {"hidden", "cell", "num_layers", "dropout_rate"} <= set(models.options("row_rnn"))
    x = jnp.zeros((2, 28, 28, 1))
    logits, _ = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
    assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)
    assert models.build("row_rnn", num_classes=10, cell="gru", hidden=32).cell == "gru"


def test_bad_cell_is_a_one_line_user_error():
    with pytest.raises(UserError) as info:
        RowRNN(num_classes=10, cell="rnn")
    message = str(info.value)
    assert "\n" not in message
    assert message == "unknown RowRNN cell 'rnn': choose one of gru, lstm"
    with pytest.raises(UserError, match="choose one of gru, lstm"):
        models.build("row_rnn", num_classes=10, cell="LSTM")


def test_bad_num_layers_is_a_user_error():
    with pytest.raises(UserError, match="num_layers"):
        RowRNN(num_classes=10, num_layers=0)
