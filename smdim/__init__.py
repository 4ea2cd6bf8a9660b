"""smdim: the SMDIM symbolic-music diffusion model (data, model, diffusion, sampling, CLI).

Built on `smdim_kernels`; the model and its tooling land with the model issue.
"""
__version__ = "0.1.0"
