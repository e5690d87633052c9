from .dsnet import DS2Net, DSNet

__all__ = ['DSNet', 'DS2Net']
