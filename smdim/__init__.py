"""smdim: the SMDIM symbolic-music diffusion model on `smdim_kernels`.

REMI data (data, tokenizer, remi), the model (model), masked-diffusion training (diffusion, train)
and sampling (sampling: generate, infill, continue), OA metrics and evaluation, the quality study
(study), the bundled models (bundled), audio (audio), the studio (studio) and the `smdim` command
line (cli).
"""
__version__ = "0.1.0"
