"""LoRA: reading the official trainers' files and merging them, writing them, the official recipes, and the
trainable adapters that training attaches to frozen networks."""
