"""Plain nn.Modules. Each takes `in_shape` (C, H, W) and `num_classes` from the data and knows nothing of Lightning."""
