"""Plain ``nn.Module`` networks. Add a model: one class here (or a new module) plus ``conf/model/<name>.yaml``."""
from labkit.models.autoencoders import ConvAutoencoder, EncoderClassifier, MLPAutoencoder
from labkit.models.classic import MLP, LeNet, LeNetAlt, LeNetColor, LeNetV2
from labkit.models.embedding import BackboneEmbedding, EmbeddingClassifier, EmbeddingNet, RawPixels
from labkit.models.minialexnet import MiniAlexNet, MiniAlexNetV2, MiniAlexNetV3, MiniAlexNetV4

__all__ = ["MLP", "LeNet", "LeNetV2", "LeNetColor", "LeNetAlt", "MiniAlexNet", "MiniAlexNetV2", "MiniAlexNetV3", "MiniAlexNetV4",
           "MLPAutoencoder", "ConvAutoencoder", "EncoderClassifier", "EmbeddingNet", "EmbeddingClassifier",
           "BackboneEmbedding", "RawPixels"]
