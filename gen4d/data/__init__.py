"""Datasets (gen4d manifests, the Diffusion4D format), Blender rendering, procedural assets, curation."""
