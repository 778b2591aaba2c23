"""Input and layer names of the musicnn family, importable without PyTorch (the ONNX Runtime path needs no more)."""

N_MELS = 96
N_FRAMES = 187  # frames per ~3 s patch
FRAME_LAYERS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3")
PATCH_LAYERS = ("mean_pool", "max_pool", "penultimate", "taggram")
VGG_LAYERS = ("pool1", "pool2", "pool3", "pool4", "pool5", "taggram")
