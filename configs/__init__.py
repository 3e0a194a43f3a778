"""Protocol configs: `configs/<protocol>.py:<stage>` (see modistill_jax/config_lib.py)."""
