"""The version of hf-ltbm (also `hf_ltbm.__version__`)."""

__version__ = "0.1.0.dev0"
