"""The im2col convolutions of wm_jax/core/nets.py compute exactly what flax's convolutions do."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.core.nets import DownConv, UpConv


@pytest.mark.parametrize("kernel", [3, 4, 5])
@pytest.mark.parametrize("ours, theirs", [
    (DownConv, lambda f, k: nn.Conv(f, (k, k), strides=2, padding="SAME")),
    (UpConv, lambda f, k: nn.ConvTranspose(f, (k, k), strides=(2, 2), padding="SAME")),
], ids=["stride-2 conv", "stride-2 transposed conv"])
def test_same_parameters_same_outputs_same_gradients(ours, theirs, kernel):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 5))
  reference = theirs(7, kernel)
  params = jax.tree.map(lambda p: p + 0.1, reference.init(jax.random.key(1), x))  # bias != 0
  mine = ours(7, kernel)
  assert jax.tree.structure(mine.init(jax.random.key(1), x)) == jax.tree.structure(params)
  np.testing.assert_allclose(mine.apply(params, x), reference.apply(params, x), atol=1e-5)
  loss = lambda module: lambda p, x: (module.apply(p, x) ** 2).sum()
  for a, b in zip(jax.tree.leaves(jax.grad(loss(mine), argnums=(0, 1))(params, x)),
                  jax.tree.leaves(jax.grad(loss(reference), argnums=(0, 1))(params, x))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", [2, 3, 4, 5])
def test_overlap_add_is_the_adjoint_of_the_patches(kernel):
  """<patches(x), c> = <x, overlap_add(c)>: each is the other's custom gradient."""
  from wm_jax.core.nets import stride2_overlap_add, stride2_patches
  blocks = 4 + (kernel - 1) // 2
  x = jax.random.normal(jax.random.key(0), (2, 2 * blocks, 2 * blocks, 3))
  patches = stride2_patches(x, kernel)
  assert patches.shape == (2, 4, 4, kernel, kernel, 3)
  c = jax.random.normal(jax.random.key(1), patches.shape)
  np.testing.assert_allclose(jnp.vdot(patches, c), jnp.vdot(x, stride2_overlap_add(c, kernel)),
                             rtol=1e-5)
  np.testing.assert_array_equal(patches[:, 1, 2, kernel - 1, 0], x[:, 2 + kernel - 1, 4])

