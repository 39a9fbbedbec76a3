"""Stand-in for the PyTorch extension's ``PyTorchUtils`` (fepegar/SlicerPyTorch): installTorch with its signature,
recorded; it returns None (declined) while ``declines`` holds True."""

import importlib.metadata
import types

#: installTorch's keyword arguments, call by call.
installs = []
declines = []


class PyTorchUtilsLogic:
    @staticmethod
    def torchInstalled():
        try:
            importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                     torchvisionVersionRequirement=None):
        installs.append({"askConfirmation": askConfirmation, "forceComputationBackend": forceComputationBackend,
                         "torchVersionRequirement": torchVersionRequirement,
                         "torchvisionVersionRequirement": torchvisionVersionRequirement})
        return None if declines and declines.pop(0) else types.ModuleType("torch")
