"""The vocabulary of settings every command and config shares, in one light module (no torch import), so
argparse choices, config validation and the bench grammar spell each value set once."""

T_POST_STRATEGIES = ("none", "uniform", "rescale", "anneal")
T_POST_RATIOS = ("m/n", "n/m")
INIT_MODES = ("copy", "fresh")
CACHE_LOCATIONS = ("first", "last", "outer", "inner", "alternating")
T_POST_WITH_RATIO = ("rescale", "anneal")  # the strategies that read t_post_ratio (eq. 4-5)
DTYPE_NAMES = ("fp32", "fp16", "bf16")  # accelerate's mixed-precision names
MIXED_PRECISION = ("no", "fp16", "bf16")  # accelerate's autocast settings
TINY_KINDS = ("pixart", "pixart-sigma", "dit", "sd3", "flux", "flux-dev", "sana")  # ilf.tiny's tiny pipelines
