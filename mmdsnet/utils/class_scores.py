"""An mmpretrain classifier as a plain ``images -> class scores`` module."""
from torch import Tensor, nn


class ClassScores(nn.Module):
    """``classifier(x, mode='tensor')``: the head's logits, for tools that want a module of one
    tensor in and one out (ONNX export of the whole classifier, Grad-CAM)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x, mode='tensor')
