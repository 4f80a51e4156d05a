"""The checkpointer: its saver, its statements and the group commit under them."""
