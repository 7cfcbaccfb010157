"""Diffusers pipeline classes for genrl's own models and export of aligned models."""
