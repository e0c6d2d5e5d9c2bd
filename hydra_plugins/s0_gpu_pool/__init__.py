"""Hydra launcher plugin: sweep jobs spread over the GPUs of one machine (see gpu_pool.py)."""
