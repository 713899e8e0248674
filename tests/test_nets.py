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
  key, k_x = jax.random.split(key)
  x = jax.random.normal(k_x, (b,) + shape)
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
  key, k_x = jax.random.split(key)
  x = jax.random.normal(k_x, (3, 8, 8, 1))
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


# torchvision's VGG-11 feature configuration ("A") and ResNet-18 stage layout.
TORCH_VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
TORCH_RESNET18_STAGES = ((64, 2), (128, 2), (256, 2), (512, 2))


def _conv_params(k, c_in, c_out, bias):
  return k * k * c_in * c_out + (c_out if bias else 0)


def _bn_params(c):
  return 2 * c     # weight and bias; running mean / var are buffers, not parameters


def _torch_vgg11_features(c_in):
  """torchvision's ``make_layers(cfg["A"])`` as a module list: conv, ReLU / max pool."""
  layers = []
  for v in TORCH_VGG11_CFG:
    if v == "M":
      layers.append(("pool",))
    else:
      layers += [("conv", c_in, v), ("relu",)]
      c_in = v
  return layers


def _torch_resnet18_stages(c_in):
  """Parameter and BatchNorm-channel counts of torchvision's resnet18: stem, then per stage."""
  stem = _conv_params(7, c_in, 64, False) + _bn_params(64)
  stages, bn_channels = [], 64
  c = 64
  for s, (width, blocks) in enumerate(TORCH_RESNET18_STAGES):
    total = 0
    for b in range(blocks):
      stride = 2 if (s > 0 and b == 0) else 1
      total += _conv_params(3, c, width, False) + _bn_params(width)        # conv1, bn1
      total += _conv_params(3, width, width, False) + _bn_params(width)    # conv2, bn2
      bn_channels += 2 * width
      if stride != 1 or c != width:                                        # downsample
        total += _conv_params(1, c, width, False) + _bn_params(width)
        bn_channels += width
      c = width
    stages.append(total)
  return stem, stages, bn_channels


def _head_params(d1, k, depth=5, width=512):
  return d1 * width + (depth - 1) * width * width + width * k     # bias-free


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def test_formulas_give_torchvision_totals():
  """The layout formulas reproduce torchvision's published totals (3 input channels,
  1000 classes): vgg11 132,863,336 and resnet18 11,689,512 parameters."""
  feats = sum(_conv_params(3, ci, co, True) for _, ci, co in
              (m for m in _torch_vgg11_features(3) if m[0] == "conv"))
  classifier = (512 * 7 * 7 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
  assert feats + classifier == 132_863_336
  stem, stages, _ = _torch_resnet18_stages(3)
  assert stem + sum(stages) + (512 * 1000 + 1000) == 11_689_512


@pytest.mark.parametrize("c_in", [1, 3])
def test_vgg11_parameter_count_is_torchvision_layout(c_in, key):
  """Parameters of ``vgg11`` = torchvision's VGG-11 ``features[:15]`` + the MLP head.

  Differences from torchvision's ``vgg11`` (see ``dnc_jax/nets/models.py``): the first
  conv takes ``c_in`` channels (1 for MNIST-like data) instead of 3; the features are cut
  after index 14 (the ReLU of the 6th conv), so the last two 512-convs and the last two
  poolings are absent; adaptive average pooling to 4×4 (not 7×7); the classifier
  (three Linear layers with bias) is replaced by the bias-free MLP head
  8192 → 512 (×5 hidden layers) → K.
  """
  kept = [m for m in _torch_vgg11_features(c_in)[:15] if m[0] == "conv"]
  assert [co for _, _, co in kept] == [64, 128, 256, 256, 512, 512]
  want_convs = [_conv_params(3, ci, co, True) for _, ci, co in kept]
  model = nets.make_model("vgg11", num_classes=K)
  v = jax.eval_shape(lambda k: nets.init_variables(model, k, jnp.zeros((1, 32, 32, c_in))), key)
  assert set(v) == {"params"}     # no BatchNorm in VGG-11 ("A", not "vgg11_bn")
  bb = v["params"]["backbone"]
  assert [_count(bb[f"conv_{i}"]) for i in range(len(bb))] == want_convs
  assert _count(v["params"]["head"]) == _head_params(512 * 4 * 4, K)
  assert _count(v["params"]) == sum(want_convs) + _head_params(8192, K)


@pytest.mark.parametrize("c_in", [1, 3])
def test_resnet18_parameter_count_is_torchvision_layout(c_in, key):
  """Parameters of ``resnet18`` = torchvision's ResNet-18 without ``fc`` + the MLP head.

  Same as torchvision: 7×7/2 stem conv (no bias) + BatchNorm, 3×3/2 max pool (the
  ImageNet stem, not a small-image 3×3 one), BasicBlocks [2, 2, 2, 2] of two 3×3 convs
  without bias each followed by BatchNorm, a 1×1 projection conv + BatchNorm where the
  stride or width changes. Differences: the stem takes ``c_in`` channels instead of 3;
  ``fc`` (512 → 1000 with bias) is replaced by the bias-free MLP head
  512 → 512 (×5 hidden layers) → K. BatchNorm running statistics are ``batch_stats``
  (torchvision's buffers), two per channel.
  """
  stem, stages, bn_channels = _torch_resnet18_stages(c_in)
  model = nets.make_model("resnet18", num_classes=K)
  v = jax.eval_shape(lambda k: nets.init_variables(model, k, jnp.zeros((1, 32, 32, c_in))), key)
  bb = v["params"]["backbone"]
  assert _count(bb["conv1"]) + _count(bb["bn1"]) == stem
  got_stages = [sum(_count(bb[f"layer{s + 1}_{b}"]) for b in range(2)) for s in range(4)]
  assert got_stages == stages
  assert _count(bb) == stem + sum(stages)
  assert _count(v["params"]["head"]) == _head_params(512, K)
  assert _count(v["batch_stats"]) == 2 * bn_channels


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
