r"""The paper's networks (Section 6, Appendix D) in ``flax.linen``.

Every model is a backbone followed by the same bias-free ReLU MLP head:

.. math::
   h_1 = \mathrm{backbone}(x),\qquad
   h_{l+1} = \mathrm{ReLU}(h_l W_l^\top)\ (l = 1..L),\qquad
   f(x) = h_{L+1} W_{\mathrm{out}}^\top,

with ``W_l`` of shape ``[width, d_l]`` (the PyTorch orientation; Flax stores the
kernel ``W_lᵀ`` of shape ``[d_l, width]``).

* ``mlp``: backbone = flatten; ``L = 5`` hidden layers of width 512; hidden
  weights Xavier-uniform times the init gain ``g``
  (``U(±g·√(6/(d_in+d_out)))``); readout at PyTorch's default
  ``U(±1/√d_in)``.
* ``vgg11``: torchvision's VGG-11 ``features[:15]`` (conv 3×3 + bias + ReLU,
  ``[64, M, 128, M, 256, 256, M, 512, 512]``: truncated after the ReLU before the
  last two poolings), first conv taking the input channels, adaptive average
  pooling to 4×4, flatten (8192) → head.
* ``resnet18``: torchvision's ResNet-18 (7×7/2 conv, BatchNorm, ReLU, 3×3/2 max
  pool, four stages of two BasicBlocks, global average pooling; ``fc`` removed,
  512) → head. BatchNorm uses batch statistics in training and running
  statistics (momentum 0.9 ≙ PyTorch's 0.1, ``eps = 1e-5``) in evaluation.

The probes need no model-specific code: :func:`embed` gives the head input
``h_1`` ``[n, d_1]`` (evaluation mode) and the pure functions
:func:`head_weights`, :func:`head_inputs` and :func:`head_tail` act on the head
parameters alone.

References:
  Beaglehole et al., NeurIPS 2024, Section 6 and Appendix D.
  Simonyan, Zisserman. Very deep convolutional networks for large-scale image
  recognition. ICLR 2015 (VGG).
  He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dnc_jax.errors import ConfigError

HIGHEST = jax.lax.Precision.HIGHEST
MODELS = ("mlp", "vgg11", "resnet18")
VGG11_TRUNCATED = (64, "M", 128, "M", 256, 256, "M", 512, 512)


def xavier_uniform(gain: float = 1.0):
  """Xavier/Glorot uniform times ``gain``: ``U(±gain·√(6/(fan_in+fan_out)))``."""
  return nn.initializers.variance_scaling(gain * gain, "fan_avg", "uniform")


def torch_default_linear():
  """PyTorch's default ``nn.Linear`` weight init: ``U(±1/√fan_in)``."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_conv():
  """PyTorch's default conv weight init: ``U(±1/√fan_in)`` (kaiming_uniform, a=√5)."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class MLPHead(nn.Module):
  """Bias-free ReLU MLP: ``depth`` hidden layers of ``width``, then a readout.

  Attributes:
    num_classes: ``K`` outputs.
    depth: number of hidden (probed) layers ``L``.
    width: hidden width.
    init_gain: gain of the Xavier-uniform hidden weights (paper: 0.3, 0.2 on MNIST).
  """
  num_classes: int
  depth: int = 5
  width: int = 512
  init_gain: float = 0.3
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h):  # h: [n, d_1]
    for l in range(self.depth):
      h = nn.relu(nn.Dense(self.width, use_bias=False, kernel_init=xavier_uniform(self.init_gain),
                           precision=HIGHEST, param_dtype=self.param_dtype, name=f"hidden_{l}")(h))
    return nn.Dense(self.num_classes, use_bias=False, kernel_init=torch_default_linear(),
                    precision=HIGHEST, param_dtype=self.param_dtype, name="readout")(h)


def _conv(features, kernel, strides=1, padding=1, use_bias=True, name=None,
          param_dtype=jnp.float32):
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                 kernel_init=torch_default_conv(), param_dtype=param_dtype, name=name)


def adaptive_avg_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """PyTorch's ``AdaptiveAvgPool2d`` on ``[n, H, W, C]``: bin ``i`` covers
  ``[⌊iH/o⌋, ⌈(i+1)H/o⌉)`` (bins overlap when ``o > H``)."""
  _, hh, ww, _ = x.shape

  def bins(size, out):
    return [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]

  rows = [jnp.mean(x[:, a:b], axis=1) for a, b in bins(hh, out_hw[0])]      # each [n, W, C]
  out = []
  for r in rows:
    out.append(jnp.stack([jnp.mean(r[:, a:b], axis=1) for a, b in bins(ww, out_hw[1])], axis=1))
  return jnp.stack(out, axis=1)   # [n, oh, ow, C]


class VGG11Features(nn.Module):
  """VGG-11 ``features[:15]`` + adaptive average pooling to 4×4 + flatten: ``[n, 8192]``."""
  pool_to: tuple = (4, 4)
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [n, H, W, C]
    del train
    i = 0
    for v in VGG11_TRUNCATED:
      if v == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nn.relu(_conv(v, 3, name=f"conv_{i}", param_dtype=self.param_dtype)(x))
        i += 1
    x = adaptive_avg_pool(x, self.pool_to)
    return x.reshape(x.shape[0], -1)


class BasicBlock(nn.Module):
  """ResNet BasicBlock: two 3×3 convs with BatchNorm, identity or 1×1 projection."""
  features: int
  strides: int = 1
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    pd = self.param_dtype
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     epsilon=1e-5, param_dtype=pd, name=name)
    y = _conv(self.features, 3, self.strides, 1, use_bias=False, name="conv1", param_dtype=pd)(x)
    y = nn.relu(norm("bn1")(y))
    y = _conv(self.features, 3, 1, 1, use_bias=False, name="conv2", param_dtype=pd)(y)
    y = norm("bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.strides, 0, use_bias=False, name="down_conv",
                param_dtype=pd)(x)
      x = norm("down_bn")(x)
    return nn.relu(x + y)


class ResNet18Features(nn.Module):
  """ResNet-18 without ``fc``: ``[n, H, W, C] → [n, 512]``."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = _conv(64, 7, 2, 3, use_bias=False, name="conv1", param_dtype=self.param_dtype)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     param_dtype=self.param_dtype, name="bn1")(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for s, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        x = BasicBlock(64 * 2**s, strides=2 if (s > 0 and b == 0) else 1,
                       param_dtype=self.param_dtype, name=f"layer{s + 1}_{b}")(x, train)
    return jnp.mean(x, axis=(1, 2))


class Network(nn.Module):
  """Backbone (``None``: flatten) followed by :class:`MLPHead`."""
  head: MLPHead
  backbone: Any = None

  def embed(self, x, train: bool = False):
    """Head input ``h_1``: ``[n, ...] → [n, d_1]``."""
    if self.backbone is None:
      return x.reshape(x.shape[0], -1)
    return self.backbone(x, train)

  def __call__(self, x, train: bool = False):
    return self.head(self.embed(x, train))


def min_image_size(name: str) -> int:
  """Smallest ``H``, ``W`` a model takes (VGG-11's three 2×2 poolings need 8)."""
  return {"mlp": 1, "vgg11": 8, "resnet18": 1}[name]


def check_input_shape(name: str, image_shape: Sequence[int]) -> None:
  """Raises :class:`ConfigError` when ``model`` cannot take images of ``image_shape``."""
  if name not in MODELS:
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
  shape = tuple(int(s) for s in image_shape)
  if name == "mlp":
    return
  if len(shape) != 3:
    raise ConfigError(f"{name} needs images [H, W, C], got example shape {shape}; "
                      "use --model mlp for vector data")
  m = min_image_size(name)
  if shape[0] < m or shape[1] < m:
    raise ConfigError(f"{name} needs images of at least {m}×{m} pixels (its poolings would "
                      f"leave an empty map), got {shape[0]}×{shape[1]}; use --model mlp or "
                      f"resnet18 for this dataset")


def make_model(name: str, *, num_classes: int, depth: int = 5, width: int = 512,
               init_gain: float = 0.3, param_dtype=jnp.float32) -> Network:
  """The network ``name`` (one of :data:`MODELS`) with the paper's MLP head.

  ``param_dtype`` (float32 or float64) is the dtype of every parameter and
  BatchNorm statistic; inputs must have the same dtype.
  """
  if name not in MODELS:
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
  if depth < 1 or width < 1:
    raise ConfigError(f"head depth and width must be ≥ 1, got depth={depth}, width={width}")
  if num_classes < 2:
    raise ConfigError(f"num_classes must be ≥ 2, got {num_classes}")
  head = MLPHead(num_classes=num_classes, depth=depth, width=width, init_gain=init_gain,
                 param_dtype=param_dtype)
  backbone = {"mlp": None, "vgg11": VGG11Features(param_dtype=param_dtype),
              "resnet18": ResNet18Features(param_dtype=param_dtype)}[name]
  return Network(head=head, backbone=backbone)


def init_variables(model: Network, key: jax.Array, example: jax.Array) -> dict:
  """Initial ``{"params": ..., ["batch_stats": ...]}`` from one example batch ``[b, ...]``."""
  return model.init(key, example, train=False)


def embed(model: Network, variables: dict, x: jax.Array) -> jax.Array:
  """Head input ``h_1`` in evaluation mode: ``[n, ...] → [n, d_1]``."""
  return model.apply(variables, x, train=False, method=Network.embed)


# ---------------------------------------------------------------- pure head functions


def head_params(variables: dict) -> dict:
  """The head's parameters ``{"hidden_0": {"kernel"}, ..., "readout": {"kernel"}}``."""
  return variables["params"]["head"]


def head_depth(hp: dict) -> int:
  return sum(1 for k in hp if k.startswith("hidden_"))


def head_weights(hp: dict) -> list[jax.Array]:
  """``[W_1, ..., W_L]``, each ``[d_{l+1}, d_l]`` (PyTorch orientation)."""
  return [hp[f"hidden_{l}"]["kernel"].T for l in range(head_depth(hp))]


def readout_weight(hp: dict) -> jax.Array:
  """``W_out`` ``[K, width]``."""
  return hp["readout"]["kernel"].T


def head_tail(hp: dict, layer: int, h: jax.Array) -> jax.Array:
  """The head from layer ``layer`` (0-based) to the output, as a pure function.

  Args:
    hp: head parameters (:func:`head_params`).
    layer: ``0 ≤ layer ≤ L``; ``L`` is the readout alone.
    h: the input of that layer, ``[d_l]`` or ``[n, d_l]``.

  Returns:
    ``[K]`` or ``[n, K]``.
  """
  for l in range(layer, head_depth(hp)):
    h = jax.nn.relu(jnp.matmul(h, hp[f"hidden_{l}"]["kernel"], precision=HIGHEST))
  return jnp.matmul(h, hp["readout"]["kernel"], precision=HIGHEST)


def head_inputs(hp: dict, h1: jax.Array) -> list[jax.Array]:
  """Inputs of every head layer and of the readout: ``[h_1, ..., h_{L+1}]`` (each ``[n, d_l]``)."""
  hs = [h1]
  for l in range(head_depth(hp)):
    hs.append(jax.nn.relu(jnp.matmul(hs[-1], hp[f"hidden_{l}"]["kernel"], precision=HIGHEST)))
  return hs
