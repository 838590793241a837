//! Image decoding and jina-clip-v2 preprocessing (Pillow-exact bicubic resize).
