"""The vocabulary of settings every command and config shares, in one light module (no torch import), so
argparse choices, config validation and the bench grammar spell each value set once."""

T_POST_STRATEGIES = ("none", "uniform", "rescale", "anneal")
T_POST_RATIOS = ("m/n", "n/m")
INIT_MODES = ("copy", "fresh")
CACHE_LOCATIONS = ("first", "last", "outer", "inner", "alternating")
DTYPE_NAMES = ("fp32", "fp16", "bf16")  # accelerate's mixed-precision names
