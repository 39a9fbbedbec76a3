"""DPETResponse library: pCR prediction from baseline breast PET.

Pure Python: importing this package (or any of its modules) never imports qt, ctk or Slicer's ``slicer``.
Heavy dependencies (torch, monai, radiomics, shap) are imported inside the modules that need them.
"""

from .core.errors import ConfigError, DPETError, InputError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DPETError", "InputError", "__version__"]
