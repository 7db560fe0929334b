"""The UDP link: paced, GSO-batched sending; GRO receiving with kernel-drop counting."""
