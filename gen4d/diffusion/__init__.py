"""Diffusion models: Zero123++ with the temporal anchor, Zero-1-to-3 SDS, the Diffusion4D video model, shared schedule maths."""
