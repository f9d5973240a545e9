"""XLA:CPU settings measured to be faster for this suite's networks, applied at import.

With jaxlib 0.10, XLA:CPU hands convolutions to its "YNN" library fusions by default; handing
them to XNNPACK's instead makes DIAMOND's U-Net update 1.3x faster and its sampling 1.4x faster
on a 2-core AMD EPYC (fp32, `benchmarks.diamond_official`: 1.05 -> 0.80 s per update at batch 8,
7.8 -> 11.5 frames/s), and leaves the matmul-based Dreamer/STORM convolutions (nets.DownConv /
UpConv) alone. The flags are experimental and version-specific, so they are only added for the
jaxlib minor version they were measured on, and never when XLA_FLAGS already sets them; they
must be in the environment before JAX starts its CPU backend (they are ignored after).
"""

from __future__ import annotations

import os

CONVOLUTION_FLAGS = ("--xla_cpu_experimental_xnn_fusion_type=individual_convolution "
                     "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
MEASURED_JAXLIB = "0.10."


def use_xnnpack_convolutions() -> bool:
  """Appends CONVOLUTION_FLAGS to XLA_FLAGS for the jaxlib they were measured with; True if it did."""
  try:
    from jaxlib import version
  except ImportError:
    return False
  flags = os.environ.get("XLA_FLAGS", "")
  if not version.__version__.startswith(MEASURED_JAXLIB) or "fusion_type" in flags:
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {CONVOLUTION_FLAGS}".strip()
  return True
