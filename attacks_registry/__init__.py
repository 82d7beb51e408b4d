"""Attack registry data (TOML). Shipped inside the wheel as ``midbench.attacks_registry``; holds no code."""
