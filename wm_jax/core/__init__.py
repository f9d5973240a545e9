"""Math shared by every world-model family.

``losses``: symlog/symexp, twohot, KL terms (DreamerV1 free nats, DreamerV2 balancing,
DreamerV3 free bits), lambda-returns, return normalisation, slow-critic EMA, decoder losses.
``distributions``: unimix, straight-through one-hot samples, ``TwoHotSymlog``, Gaussian latents.
"""
