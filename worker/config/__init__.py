"""The TOML config as validated models; knows no pipeline code (components come as validation context)."""
