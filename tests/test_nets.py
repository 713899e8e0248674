"""Models: shapes of every feature map, forward/backward passes, initialisation, pooling."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnc_jax.nets import models as nets
from dnc_jax.errors import ConfigError

K = 10


@pytest.mark.parametrize("name,shape,d1", [
    ("mlp", (28, 28, 1), 784),
    ("vgg11", (28, 28, 1), 8192),
    ("vgg11", (32, 32, 3), 8192),
    ("resnet18", (28, 28, 1), 512),
    ("resnet18", (32, 32, 3), 512),
])
def test_forward_backward_and_feature_shapes(name, shape, d1, key):
  """Forward/backward on a small batch; every head feature map has the stated shape."""
  b, width = 3, 16
  model = nets.make_model(name, num_classes=K, depth=5, width=width, init_gain=0.3)
  x = jax.random.normal(jax.random.key(1), (b,) + shape)
  y = 2.0 * jax.nn.one_hot(jnp.arange(b), K) - 1.0
  v = jax.jit(lambda k, xb: nets.init_variables(model, k, xb))(key, x)
  has_bn = "batch_stats" in v
  assert has_bn == (name == "resnet18")

  def loss(params):
    vv = {**v, "params": params}
    if has_bn:
      (h1, out), upd = model.apply(vv, x, train=True, mutable=["batch_stats"],
                                   method=lambda m, xb, train: (m.embed(xb, train), m(xb, train)))
    else:
      (h1, out), upd = model.apply(
          vv, x, train=True, method=lambda m, xb, train: (m.embed(xb, train), m(xb, train))), {}
    return jnp.mean((out - y) ** 2), (upd.get("batch_stats"), h1, out)

  (val, (new_bs, h1, out)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"])
  assert np.isfinite(float(val))
  gleaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in gleaves)
  assert sum(float(jnp.sum(jnp.abs(g))) for g in gleaves) > 0
  chex.assert_trees_all_equal_shapes(grads, v["params"])
  if has_bn:   # running statistics move in training mode
    old = jax.tree.leaves(v["batch_stats"])
    assert any(not np.allclose(a, b_) for a, b_ in zip(old, jax.tree.leaves(new_bs)))

  chex.assert_shape(h1, (b, d1))
  hp = nets.head_params(v)
  hs = nets.head_inputs(hp, h1)
  chex.assert_shape(hs, [(b, d1)] + [(b, width)] * 5)
  chex.assert_shape(nets.head_weights(hp), [(width, d1)] + [(width, width)] * 4)
  chex.assert_shape(nets.readout_weight(hp), (K, width))
  chex.assert_shape(out, (b, K))
  # The pure tail from any layer reproduces the model's output.
  for l in range(6):
    np.testing.assert_allclose(nets.head_tail(hp, l, hs[l]), out, rtol=2e-5, atol=1e-6)


def test_resnet_eval_mode_is_per_example(key):
  """In evaluation mode BatchNorm uses running statistics: outputs do not depend on the batch."""
  model = nets.make_model("resnet18", num_classes=K, width=8)
  x = jax.random.normal(jax.random.key(2), (3, 8, 8, 1))
  v = jax.jit(lambda k, xb: nets.init_variables(model, k, xb))(key, x)
  apply = jax.jit(lambda vv, xb: model.apply(vv, xb, train=False))
  full = apply(v, x)
  single = apply(v, x[:1])
  np.testing.assert_allclose(full[:1], single, rtol=1e-5, atol=1e-6)


def test_mlp_init_scales(key):
  """Hidden weights U(±g·√(6/(fan_in+fan_out))); readout U(±1/√fan_in) (PyTorch default)."""
  g = 0.3
  model = nets.make_model("mlp", num_classes=K, width=512, init_gain=g)
  v = jax.jit(lambda k: nets.init_variables(model, k, jnp.zeros((1, 28, 28, 1))))(key)
  ws = nets.head_weights(nets.head_params(v))
  for w in ws:
    fan_out, fan_in = w.shape
    bound = g * np.sqrt(6.0 / (fan_in + fan_out))
    assert float(jnp.max(jnp.abs(w))) <= bound
    assert float(jnp.std(w)) == pytest.approx(bound / np.sqrt(3.0), rel=0.02)
  wo = nets.readout_weight(nets.head_params(v))
  assert float(jnp.max(jnp.abs(wo))) <= 1 / np.sqrt(512)
  assert float(jnp.std(wo)) == pytest.approx(1 / np.sqrt(3 * 512), rel=0.05)


def test_adaptive_avg_pool_matches_torch_bins():
  """PyTorch AdaptiveAvgPool2d: bin i averages rows floor(iH/o) .. ceil((i+1)H/o) - 1."""
  x = np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
  out = np.asarray(nets.adaptive_avg_pool(jnp.asarray(x), (4, 4)))
  ref = np.zeros((2, 4, 4, 2), np.float32)
  for i in range(4):
    for j in range(4):
      r0, r1 = (i * 3) // 4, -(-((i + 1) * 3) // 4)
      c0, c1 = (j * 3) // 4, -(-((j + 1) * 3) // 4)
      ref[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
  np.testing.assert_allclose(out, ref, rtol=1e-6)
  # Identity when the size already matches.
  y = np.random.default_rng(0).normal(size=(1, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(nets.adaptive_avg_pool(jnp.asarray(y), (4, 4)), y, rtol=1e-6)


def test_bad_models_and_shapes():
  with pytest.raises(ConfigError, match="unknown model"):
    nets.make_model("alexnet", num_classes=10)
  with pytest.raises(ConfigError, match="at least 8"):
    nets.check_input_shape("vgg11", (1, 64, 1))
  with pytest.raises(ConfigError, match=r"\[H, W, C\]"):
    nets.check_input_shape("resnet18", (64,))
  nets.check_input_shape("mlp", (1, 64, 1))
  nets.check_input_shape("vgg11", (28, 28, 1))
