"""An example attnbench plugin: one feature variant (ECA) and its default config."""
